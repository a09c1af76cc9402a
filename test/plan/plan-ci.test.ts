/** The planner's side of CI: claimed runners are left alone; a failing CI system stops creation only. */
import { describe, expect, it } from 'vitest';
import { plan } from '../../src/plan/plan.js';
import type { Action, CiOutage } from '../../src/plan/types.js';
import type { ObservedGuest } from '../../src/hypervisor/hypervisor.js';
import { HASH_B, NOW, aPolicy, aProfile, aRunner, aTemplate, genAt, someFacts } from '../builders/guests.js';

const live = genAt(60);
const kinds = (actions: Action[]) => actions.map((a) => `${a.action} ${a.guest}`);
const outage: CiOutage = {
  system: 'GitHub',
  summary: '503 Service Unavailable',
  since: '2026-11-24T11:58:00.000Z',
  retryAt: '2026-11-24T12:04:00.000Z',
  failures: 2,
};

function planWith(guests: ObservedGuest[], facts = someFacts(), runners = 2, hash?: string) {
  const profile = aProfile().runners(runners);
  if (hash) profile.withHash(hash);
  return plan({
    profiles: [profile.build()],
    observed: { guests, unrecognized: [] },
    now: NOW,
    policy: aPolicy(),
    facts,
  });
}

describe('plan: claimed runners (GitLab jobs)', () => {
  it('are never scaled away: the unclaimed one goes instead, even at a higher index', () => {
    const guests = [
      aTemplate().atGen(live).build(),
      aRunner().index_(1).onTemplate(live).build(),
      aRunner().index_(2).onTemplate(live).build(),
    ];
    const claimed = new Set(['ci-runner-tiny.2']);
    expect(kinds(planWith(guests, someFacts({ claimed: [...claimed] }), 1).actions)).toEqual([
      'destroy-runner ci-runner-tiny.1',
    ]);
    expect(
      kinds(planWith(guests, someFacts({ claimed: ['ci-runner-tiny.1', 'ci-runner-tiny.2'] }), 0).actions),
    ).toEqual([]);
  });

  it('are never rolled over to a new template, nor replaced when they stop', () => {
    const next = genAt(1, HASH_B);
    const guests = [
      aTemplate().atGen(live).build(),
      aTemplate().atGen(next).withHash(HASH_B).build(),
      aRunner().index_(1).onTemplate(live).build(),
      aRunner().index_(2).onTemplate(live).inState('shutoff').build(),
    ];
    const result = planWith(guests, someFacts({ claimed: ['ci-runner-tiny.1', 'ci-runner-tiny.2'] }), 2, HASH_B);
    expect(result.actions.filter((a) => a.action !== 'retire-template')).toEqual([]);
  });
});

describe('plan: stale claims (their cleanup never came)', () => {
  it('the runner is replaced in place, and only that one; a live claim is still left alone', () => {
    const guests = [
      aTemplate().atGen(live).build(),
      aRunner().index_(1).onTemplate(live).build(),
      aRunner().index_(2).onTemplate(live).build(),
    ];
    const result = planWith(
      guests,
      someFacts({
        claimed: ['ci-runner-tiny.1'],
        staleClaims: [{ runner: 'ci-runner-tiny.2', job: '77', claimedAt: '2026-11-24T05:00:00.000Z' }],
      }),
    );
    expect(result.actions).toEqual([
      expect.objectContaining({
        action: 'replace-runner',
        guest: 'ci-runner-tiny.2',
        replacement: 'ci-runner-tiny.2',
        createFirst: false,
        reason: 'claim by job 77 at 2026-11-24T05:00:00.000Z is stale (no cleanup within ci.maxJobDuration)',
      }),
    ]);
    expect(result.actions[0]).not.toHaveProperty('crashed');
  });

  it('beyond the runner count it just goes', () => {
    const guests = [aTemplate().atGen(live).build(), aRunner().index_(1).onTemplate(live).build()];
    const result = planWith(
      guests,
      someFacts({ staleClaims: [{ runner: 'ci-runner-tiny.1', job: '77', claimedAt: 'T' }] }),
      0,
    );
    expect(kinds(result.actions)).toEqual(['destroy-runner ci-runner-tiny.1']);
    expect(result.actions[0]?.reason).toMatch(/^claim by job 77 at T is stale .*; 1 runners, want 0$/);
  });
});

describe('plan: a failing CI system', () => {
  const guests = [
    aTemplate().atGen(live).build(),
    aRunner().index_(1).onTemplate(live).build(),
    aRunner().index_(2).onTemplate(live).inState('shutoff').build(),
  ];

  it('stops runner creation until retryAt, keeps the running runners, and says why', () => {
    const result = planWith(guests, someFacts({ ciOutages: { tiny: outage } }), 3);
    expect(kinds(result.actions)).toEqual(['destroy-runner ci-runner-tiny.2']);
    expect(result.waits).toEqual([
      {
        profile: 'tiny',
        kind: 'ci-outage',
        until: outage.retryAt,
        reason: 'GitHub: 503 Service Unavailable since 11:58, retry at 12:04',
      },
    ]);
    // The watch wakes by itself when the wait is over.
    expect(result.requeue?.at).toBe(outage.retryAt);
  });

  it('is ignored once retryAt has passed', () => {
    const result = planWith(
      guests,
      someFacts({ ciOutages: { tiny: { ...outage, retryAt: '2026-11-24T11:59:00.000Z' } } }),
      3,
    );
    expect(kinds(result.actions)).toEqual(['replace-runner ci-runner-tiny.2', 'create-runner ci-runner-tiny.3']);
    expect(result.waits).toEqual([]);
  });

  it('touches only its own profile', () => {
    const result = planWith(guests, someFacts({ ciOutages: { other: outage } }), 2);
    expect(kinds(result.actions)).toEqual(['replace-runner ci-runner-tiny.2']);
  });
});
