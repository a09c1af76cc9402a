import { describe, expect, it } from 'vitest';
import { plan } from '../../src/plan/plan.js';
import type { Action, PlanInput } from '../../src/plan/types.js';
import type { ObservedGuest } from '../../src/hypervisor/hypervisor.js';
import {
  HASH_A,
  HASH_B,
  NOW,
  aPolicy,
  aProfile,
  aRebuild,
  aRunner,
  aTemplate,
  genAt,
  someFacts,
} from '../builders/guests.js';

function inputFor(input: {
  profiles?: PlanInput['profiles'];
  guests?: ObservedGuest[];
  facts?: PlanInput['facts'];
  policy?: PlanInput['policy'];
  unrecognized?: { name: string; reason: string }[];
}): PlanInput {
  return {
    profiles: input.profiles ?? [aProfile().build()],
    observed: { guests: input.guests ?? [], unrecognized: input.unrecognized ?? [] },
    now: NOW,
    policy: input.policy ?? aPolicy(),
    facts: input.facts ?? someFacts(),
  };
}

function planFor(input: Parameters<typeof inputFor>[0]) {
  return plan(inputFor(input));
}

const inSeconds = (s: number) => new Date(NOW.getTime() + s * 1000).toISOString();
const kinds = (actions: Action[]) => actions.map((a) => `${a.action} ${a.guest}`);

const live = genAt(60);
const older = genAt(600);
const oldest = genAt(6000);

describe('plan: templates and builds', () => {
  it('builds when there is no template, and runners wait for it', () => {
    const result = planFor({});
    expect(kinds(result.actions)).toEqual([`build ci-rebuild-tiny@${genAt(0)}`]);
    expect(result.actions[0]?.reason).toBe('no template yet');
    expect(result.waits.map((w) => w.reason)).toEqual(['runners wait for the first template']);
  });

  it('builds when the live template was built from other inputs, and keeps runners on it meanwhile', () => {
    const result = planFor({
      profiles: [aProfile().withHash(HASH_B).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aRunner().index_(1).onTemplate(live).build(),
        aRunner().index_(2).onTemplate(live).build(),
      ],
    });
    expect(kinds(result.actions)).toEqual([`build ci-rebuild-tiny@${genAt(0, HASH_B)}`]);
    expect(result.actions[0]?.reason).toMatch(/^inputs changed/);
  });

  it('rebuilds a template older than rebuild.maxAge', () => {
    const result = planFor({
      profiles: [aProfile().runners(0).maxAge(3000).build()],
      guests: [aTemplate().atGen(live).build()],
    });
    expect(result.actions.map((a) => a.action)).toEqual(['build']);
    expect(result.actions[0]?.reason).toMatch(/is 60m old \(rebuild.maxAge 50m\)/);
  });

  it('does nothing while its own build is in flight, and says so', () => {
    const result = planFor({
      profiles: [aProfile().withHash(HASH_B).runners(0).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aRebuild().withHash(HASH_B).atGen(genAt(2, HASH_B)).ownedBy('me').build(),
      ],
      facts: someFacts({ ownerToken: 'me' }),
    });
    expect(result.actions).toEqual([]);
    expect(result.waits[0]?.reason).toMatch(/^build ci-rebuild-tiny@.* in flight/);
  });

  it('does not plan a second build while its own is queued but not yet defined', () => {
    const queued = `ci-rebuild-tiny@${genAt(1)}`;
    const result = planFor({
      profiles: [aProfile().runners(0).build()],
      facts: someFacts({ ownerToken: 'me', inFlight: [queued] }),
    });
    expect(result.actions).toEqual([]);
    expect(result.waits.map((w) => w.reason)).toEqual([`build ${queued} queued or starting`]);
  });

  it('discards a failed rebuild, a crashed-owner rebuild that still runs, and a crashed one', () => {
    const result = planFor({
      profiles: [aProfile().runners(0).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aRebuild()
          .atGen(genAt(5))
          .inState('shutoff')
          .withVerdict({ ok: false, reason: 'provision.sh exited 3' })
          .build(),
        aRebuild().atGen(genAt(4)).ownedBy('dead-process').build(),
        aRebuild().atGen(genAt(3)).inState('crashed').withVerdict({ ok: false, reason: 'guest crashed' }).build(),
      ],
      facts: someFacts({ ownerToken: 'me' }),
    });
    expect(result.actions.map((a) => [a.action, a.reason])).toEqual([
      ['discard', 'rebuild failed: guest crashed'],
      ['discard', 'orphaned rebuild: the process that started it no longer holds the lock'],
      ['discard', 'rebuild failed: provision.sh exited 3'],
    ]);
  });

  it('promotes an orphaned rebuild that finished successfully, and runners follow it in the same plan', () => {
    const fresh = genAt(5, HASH_B);
    const result = planFor({
      profiles: [aProfile().withHash(HASH_B).runners(1).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aRunner().onTemplate(live).build(),
        aRebuild().withHash(HASH_B).atGen(fresh).inState('shutoff').withVerdict({ ok: true }).build(),
      ],
    });
    expect(kinds(result.actions)).toEqual([`promote ci-rebuild-tiny@${fresh}`, 'create-runner ci-runner-tiny.2']);
    expect(result.actions[1]).toMatchObject({ template: `ci-template-tiny@${fresh}` });
  });

  it('backs off after failed builds and says until when', () => {
    const result = planFor({
      facts: someFacts({
        backoff: { tiny: { failures: 3, until: inSeconds(60), lastError: 'timed out' } },
      }),
    });
    expect(result.actions).toEqual([]);
    expect(result.waits[0]).toMatchObject({ kind: 'build-backoff', until: inSeconds(60) });
    expect(result.waits[0]?.reason).toMatch(
      /no template yet; backing off after 3 failed build\(s\) until .* \(last: timed out\)/,
    );
  });

  it('rebuilds on an operator request made after the live template, inputs unchanged', () => {
    const at = (minutesAgo: number) => new Date(NOW.getTime() - minutesAgo * 60_000).toISOString();
    const guests = [aTemplate().atGen(live).build()];
    const profiles = [aProfile().runners(0).build()];
    const requested = planFor({ profiles, guests, facts: someFacts({ rebuildRequests: { tiny: at(1) } }) });
    expect(requested.actions.map((a) => a.action)).toEqual(['build']);
    expect(requested.actions[0]?.reason).toBe(`rebuild requested at ${at(1)}`);
    // Satisfied once a template newer than the request exists: no rebuild loop.
    const satisfied = planFor({ profiles, guests, facts: someFacts({ rebuildRequests: { tiny: at(90) } }) });
    expect(satisfied.actions).toEqual([]);
    // Another profile's request changes nothing here.
    expect(planFor({ profiles, guests, facts: someFacts({ rebuildRequests: { other: at(1) } }) }).actions).toEqual([]);
  });

  it('gives a forced rebuild in the same second as the live template a generation of its own', () => {
    const now = genAt(0);
    const result = planFor({
      profiles: [aProfile().runners(0).build()],
      guests: [aTemplate().atGen(now).build()],
      facts: someFacts({ rebuildRequests: { tiny: new Date(NOW.getTime() + 1).toISOString() } }),
    });
    const build = result.actions[0];
    expect(build?.action).toBe('build');
    expect(build?.action === 'build' && build.gen).not.toBe(now);
    expect(build?.guest).toMatch(/^ci-rebuild-tiny@\d{8}T\d{6}Z-aaaaaaaa$/);
  });

  it('lets a rebuild request made after the last failure through the back-off, but not an older one', () => {
    const at = (minutesAgo: number) => new Date(NOW.getTime() - minutesAgo * 60_000).toISOString();
    const backoff = {
      tiny: { failures: 2, until: new Date(NOW.getTime() + 600_000).toISOString(), lastError: 'x', failedAt: at(5) },
    };
    const guests = [aTemplate().atGen(live).build()];
    const profiles = [aProfile().runners(0).build()];
    const fresh = planFor({ profiles, guests, facts: someFacts({ backoff, rebuildRequests: { tiny: at(1) } }) });
    expect(fresh.actions.map((a) => a.action)).toEqual(['build']);
    const stale = planFor({ profiles, guests, facts: someFacts({ backoff, rebuildRequests: { tiny: at(10) } }) });
    expect(stale.actions).toEqual([]);
    expect(stale.waits[0]?.reason).toMatch(/^rebuild requested at .*; backing off after 2 failed build\(s\)/);
  });

  it('builds again once the back-off has expired', () => {
    const result = planFor({
      facts: someFacts({
        backoff: { tiny: { failures: 3, until: new Date(NOW.getTime() - 1).toISOString(), lastError: 'x' } },
      }),
    });
    expect(result.actions.map((a) => a.action)).toEqual(['build']);
  });
});

describe('plan: runners', () => {
  const template = aTemplate().atGen(live).build();

  it('creates runners up to the count with the lowest free indices', () => {
    const result = planFor({
      profiles: [aProfile().runners(3).build()],
      guests: [template, aRunner().index_(2).onTemplate(live).build()],
    });
    expect(kinds(result.actions)).toEqual(['create-runner ci-runner-tiny.1', 'create-runner ci-runner-tiny.3']);
  });

  it('scales down stopped first, then outdated, then the highest index', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [
        template,
        aTemplate().atGen(older).build(),
        aRunner().index_(1).onTemplate(live).build(),
        aRunner().index_(2).onTemplate(live).build(),
        aRunner().index_(3).onTemplate(older).build(),
        aRunner().index_(4).onTemplate(live).inState('shutoff').build(),
      ],
    });
    expect(kinds(result.actions)).toEqual([
      'destroy-runner ci-runner-tiny.4',
      'destroy-runner ci-runner-tiny.3',
      'destroy-runner ci-runner-tiny.2',
    ]);
  });

  it('replaces runners on an old template rollingly: create first, at most a quarter at a time', () => {
    const runners = [1, 2, 3, 4, 5, 6, 7, 8].map((i) => aRunner().index_(i).onTemplate(older).build());
    const result = planFor({
      profiles: [aProfile().runners(8).build()],
      guests: [template, aTemplate().atGen(older).build(), ...runners],
    });
    // Nothing old goes before something new is ready: this pass only creates the surge.
    expect(kinds(result.actions)).toEqual(['create-runner ci-runner-tiny.9', 'create-runner ci-runner-tiny.10']);
    expect(result.actions.every((a) => a.action === 'create-runner' && a.template === template.name)).toBe(true);
  });

  it('destroys an outdated runner only once a replacement says ready', () => {
    const old = [1, 2].map((i) => aRunner().index_(i).onTemplate(older).build());
    const guests = (condition: 'booting' | 'ready') => [
      template,
      aTemplate().atGen(older).build(),
      ...old,
      aRunner().index_(3).onTemplate(live).saying(condition).build(),
    ];
    const booting = planFor({ profiles: [aProfile().runners(2).build()], guests: guests('booting') });
    expect(booting.actions).toEqual([]);
    expect(booting.booting).toEqual(['ci-runner-tiny.3']);
    expect(booting.waits.map((w) => w.reason)).toContain('outdated runners wait for ci-runner-tiny.3 to say ready');
    // Saying ready is no lifecycle event: the plan asks to be looked at again shortly.
    expect(booting.requeue).toEqual({ at: inSeconds(2), reason: 'tiny: runner-booting' });
    const ready = planFor({ profiles: [aProfile().runners(2).build()], guests: guests('ready') });
    // One old runner goes (the ready replacement stands in for it) and the next replacement starts.
    expect(kinds(ready.actions)).toEqual(['destroy-runner ci-runner-tiny.2', 'create-runner ci-runner-tiny.4']);
  });

  it('leaves a busy outdated runner to finish its job, up to rollout.drainTimeout', () => {
    const guests = (busySince: string) => [
      template,
      aTemplate().atGen(older).build(),
      aRunner().index_(1).onTemplate(older).build(),
      aRunner().index_(2).onTemplate(older).saying('busy', busySince).build(),
      aRunner().index_(3).onTemplate(live).saying('ready').build(),
      aRunner().index_(4).onTemplate(live).saying('ready').build(),
    ];
    const profile = aProfile().runners(2).build();
    const recent = planFor({ profiles: [profile], guests: guests(new Date(NOW.getTime() - 60_000).toISOString()) });
    expect(kinds(recent.actions)).toEqual(['destroy-runner ci-runner-tiny.1']);
    expect(recent.draining).toEqual(['ci-runner-tiny.2']);
    expect(recent.waits.map((w) => w.reason)).toContainEqual(
      expect.stringMatching(/ci-runner-tiny.2 is busy on outdated template .*draining/),
    );
    expect(recent.requeue).toEqual({ at: inSeconds(2), reason: 'tiny: runner-draining' });
    // The old template stays while its busy runner does.
    expect(recent.actions.some((a) => a.action === 'retire-template')).toBe(false);

    const timedOut = planFor({
      profiles: [{ ...profile, rollout: { drainTimeoutSeconds: 3600 } }],
      guests: guests(new Date(NOW.getTime() - 2 * 3600_000).toISOString()),
    });
    expect(kinds(timedOut.actions)).toEqual(['destroy-runner ci-runner-tiny.2', 'destroy-runner ci-runner-tiny.1']);
    expect(timedOut.actions[0]?.reason).toMatch(/beyond rollout.drainTimeout \(60m\), destroyed mid-job/);

    // Half a second before its drain times out: the plan wakes just after the deadline, not 2 s later.
    const almost = planFor({
      profiles: [{ ...profile, rollout: { drainTimeoutSeconds: 3600 } }],
      guests: guests(new Date(NOW.getTime() - 3599_500).toISOString()),
    });
    expect(almost.draining).toEqual(['ci-runner-tiny.2']);
    expect(almost.requeue).toEqual({ at: inSeconds(1.5), reason: 'tiny: runner-draining' });
  });

  it('scales down idle runners first and never a busy one', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [
        template,
        aRunner().index_(1).onTemplate(live).saying('ready').build(),
        aRunner().index_(2).onTemplate(live).saying('busy').build(),
        aRunner().index_(3).onTemplate(live).saying('busy').build(),
      ],
    });
    expect(kinds(result.actions)).toEqual(['destroy-runner ci-runner-tiny.1']);
    expect(result.waits.map((w) => w.reason)).toContain(
      '1 busy runner(s) beyond the count of 1 left to finish their job',
    );
  });

  it('replaces a shut-off runner (ephemeral: job done) under the same name, destroying first', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [template, aRunner().onTemplate(live).inState('shutoff').build()],
    });
    expect(result.actions).toMatchObject([
      {
        action: 'replace-runner',
        guest: 'ci-runner-tiny.1',
        replacement: 'ci-runner-tiny.1',
        createFirst: false,
        reason: 'runner shut off (job done)',
      },
    ]);
  });

  it('changing only the runner count changes only runners', () => {
    const guests = [
      template,
      aRunner().index_(1).onTemplate(live).build(),
      aRunner().index_(2).onTemplate(live).build(),
    ];
    expect(planFor({ profiles: [aProfile().runners(2).build()], guests }).actions).toEqual([]);
    expect(planFor({ profiles: [aProfile().runners(3).build()], guests }).actions.map((a) => a.action)).toEqual([
      'create-runner',
    ]);
    expect(planFor({ profiles: [aProfile().runners(0).build()], guests }).actions.map((a) => a.action)).toEqual([
      'destroy-runner',
      'destroy-runner',
    ]);
  });
});

describe('plan: retirement, removal, ownership', () => {
  it('retires templates beyond keepTemplates that no runner uses, keeps one a runner still uses', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aTemplate().atGen(older).build(),
        aTemplate().atGen(oldest).build(),
        aTemplate().atGen(genAt(9000)).build(),
        aRunner().index_(1).onTemplate(oldest).build(),
      ],
      policy: aPolicy({ keepTemplates: 2 }),
    });
    expect(kinds(result.actions.filter((a) => a.action === 'retire-template'))).toEqual([
      `retire-template ci-template-tiny@${genAt(9000)}`,
    ]);
  });

  it('never retires the template runners are being replaced from in this pass', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aTemplate().atGen(older).build(),
        aTemplate().atGen(oldest).build(),
        aRunner().onTemplate(oldest).build(),
      ],
      policy: aPolicy({ keepTemplates: 1 }),
    });
    expect(kinds(result.actions)).toEqual([
      'create-runner ci-runner-tiny.2',
      `retire-template ci-template-tiny@${older}`,
    ]);
  });

  it('tears down a profile that no source declares any more: runners, rebuilds, templates', () => {
    const result = planFor({
      profiles: [],
      guests: [
        aTemplate().forProfile('gone').atGen(live).build(),
        aRunner().forProfile('gone').onTemplate(live).build(),
        aRebuild().forProfile('gone').atGen(genAt(1)).build(),
      ],
    });
    expect(result.actions.map((a) => a.action)).toEqual(['destroy-runner', 'discard', 'retire-template']);
  });

  it('reports guests with our prefix that do not parse, and never acts on them', () => {
    const result = planFor({
      profiles: [aProfile().runners(0).build()],
      guests: [aTemplate().atGen(live).build()],
      unrecognized: [{ name: 'ci-something', reason: 'name does not follow corral naming' }],
    });
    expect(result.actions).toEqual([]);
    expect(result.unrecognized).toEqual([{ name: 'ci-something', reason: 'name does not follow corral naming' }]);
  });

  it('never changes its input, and the same input gives the same plan', () => {
    const input = inputFor({
      profiles: [aProfile().withHash(HASH_B).runners(3).maxAge(60).build(), aProfile('gone').build()],
      guests: [
        aTemplate().atGen(live).withHash(HASH_A).build(),
        aTemplate().atGen(older).withHash(HASH_A).build(),
        aRunner().onTemplate(live).build(),
        aRunner().index_(2).onTemplate(older).inState('crashed').build(),
        aRebuild().atGen(genAt(1, HASH_B)).withHash(HASH_B).inState('shutoff').withVerdict({ ok: true }).build(),
        aRunner().forProfile('removed').onTemplate(live).build(),
      ],
      facts: someFacts({ ownerToken: 'me', inFlight: ['ci-rebuild-gone@x'] }),
    });
    const before = structuredClone(input);
    const first = plan(deepFreeze(input));
    expect(input).toEqual(before);
    expect(plan(structuredClone(before))).toEqual(first);
  });
});

/** Freezes every object reachable from `value`: a planner that mutates its input throws in strict mode. */
function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value as object)) deepFreeze(child);
  }
  return value;
}

describe('plan: when to look again (requeue)', () => {
  it('wakes at the back-off expiry of a failing profile', () => {
    const result = planFor({
      facts: someFacts({ backoff: { tiny: { failures: 1, until: inSeconds(40), lastError: 'x' } } }),
    });
    expect(result.requeue).toEqual({ at: inSeconds(40), reason: 'tiny: build-backoff' });
  });

  it('wakes just after the live template reaches rebuild.maxAge', () => {
    const result = planFor({
      profiles: [aProfile().runners(0).maxAge(3700).build()],
      guests: [aTemplate().atGen(live).build()],
    });
    expect(result.actions).toEqual([]);
    expect(result.requeue?.at).toBe(new Date(NOW.getTime() + 100_000 + 1).toISOString());
    expect(result.requeue?.reason).toMatch(/reaches rebuild.maxAge/);
  });

  it("wakes at an in-flight build's provision.timeout deadline", () => {
    const result = planFor({
      profiles: [aProfile().withHash(HASH_B).runners(0).build()],
      guests: [
        aTemplate().atGen(live).build(),
        aRebuild().withHash(HASH_B).atGen(genAt(0.5, HASH_B)).ownedBy('me').build(),
      ],
      facts: someFacts({ ownerToken: 'me' }),
    });
    expect(result.waits[0]).toMatchObject({ kind: 'build-in-flight', until: inSeconds(30) });
    expect(result.requeue?.at).toBe(inSeconds(30));
  });

  it("wakes at an absent source's grace end, whichever comes first", () => {
    const result = planFor({
      facts: someFacts({
        backoff: { tiny: { failures: 1, until: inSeconds(40), lastError: 'x' } },
        absentSources: [{ dir: '/mnt/usb/profiles', until: inSeconds(10) }],
      }),
    });
    expect(result.requeue).toEqual({ at: inSeconds(10), reason: 'grace period of /mnt/usb/profiles ends' });
  });

  it('has no requeue when only an outside event can change the answer', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [aTemplate().atGen(live).build(), aRunner().onTemplate(live).build()],
    });
    expect(result.actions).toEqual([]);
    expect(result.requeue).toBeUndefined();
  });
});

describe('plan: runner crash loops', () => {
  const guests = [aTemplate().atGen(live).build(), aRunner().onTemplate(live).inState('crashed').build()];

  it('replaces a crashed runner at once the first time, marked as a crash', () => {
    const result = planFor({ profiles: [aProfile().runners(1).build()], guests });
    expect(result.actions).toEqual([expect.objectContaining({ action: 'replace-runner', crashed: true })]);
  });

  it('holds a crashed runner while the profile backs off, says why, and wakes at the expiry', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests,
      facts: someFacts({ runnerBackoff: { tiny: { failures: 3, until: inSeconds(80), lastError: 'x crashed' } } }),
    });
    expect(result.actions).toEqual([]);
    expect(result.waits).toEqual([
      expect.objectContaining({
        kind: 'runner-backoff',
        until: inSeconds(80),
        reason: expect.stringMatching(/crashed 3 time/),
      }),
    ]);
    expect(result.requeue?.at).toBe(inSeconds(80));
  });

  it('does not hold a runner that shut off after its job, even while the profile backs off', () => {
    const result = planFor({
      profiles: [aProfile().runners(1).build()],
      guests: [aTemplate().atGen(live).build(), aRunner().onTemplate(live).inState('shutoff').build()],
      facts: someFacts({ runnerBackoff: { tiny: { failures: 3, until: inSeconds(80), lastError: 'x' } } }),
    });
    expect(result.actions.map((a) => a.action)).toEqual(['replace-runner']);
  });
});

describe('plan: configuration errors', () => {
  it('starts no build of inputs whose last build failed on a configuration error, and says why', () => {
    const facts = someFacts({
      configErrors: { tiny: { inputsHash: HASH_A, error: 'base version "x" is not a sha256 digest' } },
    });
    const result = planFor({ profiles: [aProfile().runners(0).build()], facts });
    expect(result.actions).toEqual([]);
    expect(result.waits).toEqual([
      expect.objectContaining({ kind: 'config-error', reason: expect.stringMatching(/not a sha256 digest/) }),
    ]);
    expect(result.requeue).toBeUndefined();
  });

  it('builds again once the profile changed (a new inputs hash)', () => {
    const facts = someFacts({ configErrors: { tiny: { inputsHash: HASH_B, error: 'x' } } });
    expect(planFor({ profiles: [aProfile().runners(0).build()], facts }).actions.map((a) => a.action)).toEqual([
      'build',
    ]);
  });
});
