/**
 * The planner's registry actions (docs/oci-format.md, "Profiles that use a registry"): a follower's
 * pull is a `pull` of its own (never a `build` of a rebuild guest that will never exist), and a
 * publish is a level-triggered action that stays pending, backed off, until a push succeeds.
 */
import { describe, expect, it } from 'vitest';
import { plan } from '../../src/plan/plan.js';
import { formatPlan } from '../../src/plan/format.js';
import { inFlightKey, type Facts, type PlanInput } from '../../src/plan/types.js';
import type { ObservedGuest } from '../../src/hypervisor/hypervisor.js';
import { HASH_A, NOW, aPolicy, aProfile, aRunner, aTemplate, genAt, someFacts } from '../builders/guests.js';

const TAG = '127.0.0.1:5000/ci/tiny:main';
const DIGEST_1 = `sha256:${'1'.repeat(64)}`;
const DIGEST_2 = `sha256:${'2'.repeat(64)}`;
const inSeconds = (s: number) => new Date(NOW.getTime() + s * 1000).toISOString();

function planFor(profiles: PlanInput['profiles'], guests: ObservedGuest[] = [], facts: Partial<Facts> = {}) {
  return plan({
    profiles,
    observed: { guests, unrecognized: [] },
    now: NOW,
    policy: aPolicy(),
    facts: someFacts(facts),
  });
}

describe('plan: a profile that follows a tag', () => {
  it('pulls a new digest as a `pull` landing under the template name it plans, and keeps runners meanwhile', () => {
    const live = genAt(60, DIGEST_1);
    const result = planFor(
      [aProfile().following(TAG, DIGEST_2).build()],
      [
        aTemplate().withHash(DIGEST_1).atGen(live).build(),
        aRunner().index_(1).withHash(DIGEST_1).onTemplate(live).build(),
        aRunner().index_(2).withHash(DIGEST_1).onTemplate(live).build(),
      ],
    );
    const gen = genAt(0, DIGEST_2);
    expect(result.actions).toEqual([
      {
        profile: 'tiny',
        action: 'pull',
        guest: `ci-template-tiny@${gen}`,
        gen,
        template: `ci-template-tiny@${gen}`,
        reference: `127.0.0.1:5000/ci/tiny@${DIGEST_2}`,
        inputsHash: DIGEST_2,
        reason: expect.stringMatching(/^inputs changed/),
      },
    ]);
    expect(formatPlan(result, NOW)).toContain(
      `+ ci-template-tiny@${gen}  pull: inputs changed (live template ${live} was built from 111111111111, want 222222222222) (from 127.0.0.1:5000/ci/tiny@${DIGEST_2})`,
    );
    expect(formatPlan(result, NOW)).toMatch(/Plan: 1 pull\.\n$/);
  });

  it('plans no pull while the tag is unresolved (the registry wait says why), nor for a rebuild request', () => {
    expect(planFor([aProfile().following(TAG).build()]).actions).toEqual([]);
    const live = genAt(60, DIGEST_1);
    const requested = planFor(
      [aProfile().following(TAG, DIGEST_1).runners(0).build()],
      [aTemplate().withHash(DIGEST_1).atGen(live).build()],
      { rebuildRequests: { tiny: inSeconds(-1) } },
    );
    expect(requested.actions).toEqual([]);
  });

  it('a pull in flight holds the next one back with a pull-queued wait; a failed one backs off as a pull', () => {
    const gen = genAt(0, DIGEST_2);
    const queued = planFor([aProfile().following(TAG, DIGEST_2).runners(0).build()], [], {
      ownerToken: 'me',
      inFlight: [inFlightKey({ action: 'pull', guest: `ci-template-tiny@${gen}` })],
    });
    expect(queued.actions).toEqual([]);
    expect(queued.waits).toEqual([
      { profile: 'tiny', kind: 'pull-queued', reason: `pull of ci-template-tiny@${gen} queued or running` },
    ]);
    const backedOff = planFor([aProfile().following(TAG, DIGEST_2).runners(0).build()], [], {
      backoff: { tiny: { failures: 2, until: inSeconds(30), lastError: 'pull of … failed: 503' } },
    });
    expect(backedOff.actions).toEqual([]);
    expect(backedOff.waits[0]).toMatchObject({ kind: 'build-backoff', until: inSeconds(30) });
    expect(backedOff.waits[0]?.reason).toMatch(/backing off after 2 failed pull\(s\)/);
    expect(backedOff.requeue?.at).toBe(inSeconds(30));
  });
});

describe('plan: pulls another process is running (their staging locks)', () => {
  it('a follower whose digest is being pulled waits instead of planning the pull again', () => {
    const result = planFor([aProfile().following(TAG, DIGEST_2).runners(0).build()], [], {
      pullsRunning: { ['2'.repeat(64)]: 'pid 42, corral pull 127.0.0.1:5000/ci/tiny@sha256:…' },
    });
    expect(result.actions).toEqual([]);
    expect(result.waits).toEqual([
      {
        profile: 'tiny',
        kind: 'pull-queued',
        reason: `${TAG}@${DIGEST_2} is being pulled (pid 42, corral pull 127.0.0.1:5000/ci/tiny@sha256:…)`,
      },
    ]);
  });

  it('a base: {oci} profile whose new base is being pulled shows the build as under way', () => {
    const profile = {
      ...aProfile().runners(0).build(),
      base: { kind: 'oci' as const, ref: TAG },
      baseVersion: DIGEST_1,
    };
    const running = planFor([profile], [], { pullsRunning: { ['1'.repeat(64)]: 'pid 7, corral pull x' } });
    expect(running.actions).toEqual([]);
    expect(running.waits[0]).toMatchObject({ kind: 'build-queued' });
    expect(running.waits[0]?.reason).toMatch(
      /^no template yet; base 127.0.0.1:5000\/ci\/tiny:main \(sha256:111111111111…\) is being pulled for the build \(pid 7, corral pull x\)$/,
    );
    // Another image's pull holds nothing back.
    const other = planFor([profile], [], { pullsRunning: { ['3'.repeat(64)]: 'pid 7, corral pull y' } });
    expect(other.actions.map((a) => a.action)).toEqual(['build']);
  });
});

describe('plan: publish', () => {
  const live = genAt(60);
  const liveName = `ci-template-tiny@${live}`;
  const publisher = () => aProfile().runners(0).publishing(TAG).build();
  const templates = () => [aTemplate().atGen(live).build()];

  it('publishes the live template when the tag does not point at it yet, in the background', () => {
    const result = planFor([publisher()], templates());
    expect(result.actions).toEqual([
      {
        profile: 'tiny',
        action: 'publish',
        guest: liveName,
        template: liveName,
        reference: TAG,
        reason: `${liveName} is not published yet`,
      },
    ]);
    expect(formatPlan(result, NOW)).toContain(`~ ${liveName}  publish: ${liveName} is not published yet (to ${TAG})`);
  });

  it('does nothing once the live template is published there, and publishes a newer one', () => {
    const published = { tiny: { template: liveName, reference: TAG, digest: DIGEST_1, at: inSeconds(-10) } };
    expect(planFor([publisher()], templates(), { published }).actions).toEqual([]);
    const newer = genAt(1);
    const result = planFor([publisher()], [...templates(), aTemplate().atGen(newer).build()], { published });
    expect(result.actions.map((a) => `${a.action} ${a.guest}`)).toEqual([`publish ci-template-tiny@${newer}`]);
    expect(result.actions[0]?.reason).toBe(`${TAG} points at ${liveName}, not the live template`);
  });

  it('publishes nothing while the profile has no current template (an outdated one is not pushed)', () => {
    const outdated = [aTemplate().withHash(HASH_A).atGen(live).build()];
    const result = planFor([aProfile().runners(0).withHash(DIGEST_2).publishing(TAG).build()], outdated);
    expect(result.actions.map((a) => a.action)).toEqual(['build']);
  });

  it('a failed publish stays pending: a typed wait until its back-off ends, which wakes the watch', () => {
    const result = planFor([publisher()], templates(), {
      publishBackoff: { tiny: { failures: 3, until: inSeconds(60), lastError: 'HTTP 503' } },
    });
    expect(result.actions).toEqual([]);
    expect(result.waits).toEqual([
      {
        profile: 'tiny',
        kind: 'publish-backoff',
        until: inSeconds(60),
        reason: `publish of ${liveName} to ${TAG} pending: 3 failed push(es), retrying at ${inSeconds(60)} (last: HTTP 503)`,
      },
    ]);
    expect(result.requeue).toEqual({ at: inSeconds(60), reason: 'tiny: publish-backoff' });
    // Once the back-off is over, the publish is planned again.
    const later = planFor([publisher()], templates(), {
      publishBackoff: { tiny: { failures: 3, until: inSeconds(-1), lastError: 'HTTP 503' } },
    });
    expect(later.actions.map((a) => a.action)).toEqual(['publish']);
  });

  it('a publish in flight is not planned twice and holds no build back', () => {
    // The live template is too old (rebuild.maxAge) while its publish is still running: the build goes ahead.
    const result = planFor([aProfile().runners(0).maxAge(60).publishing(TAG).build()], templates(), {
      ownerToken: 'me',
      inFlight: [inFlightKey({ action: 'publish', guest: liveName })],
    });
    expect(result.actions.map((a) => a.action)).toEqual(['build']);
    expect(result.waits.map((w) => w.kind)).toEqual(['publish-queued']);
    const same = planFor([publisher()], templates(), {
      ownerToken: 'me',
      inFlight: [inFlightKey({ action: 'publish', guest: liveName })],
    });
    expect(same.actions).toEqual([]);
    expect(same.waits.map((w) => w.kind)).toEqual(['publish-queued']);
  });
});
