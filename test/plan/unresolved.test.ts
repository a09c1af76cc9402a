import { describe, expect, it } from 'vitest';
import { plan } from '../../src/plan/plan.js';
import { HASH_A, HASH_B, NOW, aPolicy, aProfile, aRunner, aTemplate, genAt, someFacts } from '../builders/guests.js';

const live = genAt(60);
const RETRY = new Date(NOW.getTime() + 15_000).toISOString();

describe('plan: a base that could not be resolved this pass', () => {
  it('starts no build, keeps the live template and its runners, and says why', () => {
    const result = plan({
      // Outdated (another hash): without the resolve failure this would build.
      profiles: [aProfile().withHash(HASH_B).build()],
      observed: {
        guests: [
          aTemplate().atGen(live).build(),
          aRunner().index_(1).onTemplate(live).build(),
          aRunner().index_(2).onTemplate(live).build(),
        ],
        unrecognized: [],
      },
      now: NOW,
      policy: aPolicy(),
      facts: someFacts({
        unresolvedBases: {
          tiny: { reason: 'cannot read http://images/SHA256SUMS: fetch failed', retryAt: RETRY },
        },
      }),
    });
    expect(result.actions).toEqual([]);
    expect(result.waits).toEqual([
      {
        profile: 'tiny',
        kind: 'base-unresolved',
        until: RETRY,
        reason: 'base not resolved: cannot read http://images/SHA256SUMS: fetch failed; live template and runners kept',
      },
    ]);
    // The resolver's back-off is when the plan asks to look again.
    expect(result.requeue).toEqual({ at: RETRY, reason: 'tiny: base-unresolved' });
  });

  it('still replaces a runner whose job is done, from the live template', () => {
    const result = plan({
      profiles: [aProfile().withHash(HASH_A).build()],
      observed: {
        guests: [
          aTemplate().atGen(live).build(),
          aRunner().index_(1).onTemplate(live).inState('shutoff').build(),
          aRunner().index_(2).onTemplate(live).build(),
        ],
        unrecognized: [],
      },
      now: NOW,
      policy: aPolicy(),
      facts: someFacts({ unresolvedBases: { tiny: { reason: 'server down', retryAt: RETRY } } }),
    });
    expect(result.actions.map((a) => a.action)).toEqual(['replace-runner']);
  });
});
