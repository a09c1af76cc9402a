import type { ObservedGuest, RunnerCondition } from '../hypervisor/hypervisor.js';
import { runnerName } from '../hypervisor/names.js';
import type { CompiledProfile } from '../sources/view.js';
import { formatDuration } from '../util/duration.js';
import type { Action, Facts, Policy, Wait } from './types.js';

export interface RunnerPlan {
  actions: Action[];
  waits: Wait[];
  /** Template generations that runners still use after this plan (replaced runners count until gone). */
  remainingGens: Set<string>;
  /** Running runners that have not said `ready` yet: a pass soon will see them ready. */
  booting: string[];
  /** Busy runners on outdated templates, left to finish their job. */
  draining: string[];
}

/** Six hours: long enough for nearly every CI job, short enough that an outdated runner does not linger for days. */
export const DEFAULT_DRAIN_TIMEOUT_SECONDS = 6 * 3600;

/**
 * How soon the plan asks to look again while runners are booting or draining: what a runner says
 * on its status channel is not a lifecycle event, so only a pass sees it.
 */
export const READY_RECHECK_MS = 2000;

/** What a running runner said; a backend that cannot tell (memory) reports nothing, which counts as ready. */
export function conditionOf(r: ObservedGuest): RunnerCondition {
  return r.condition ?? 'ready';
}

/**
 * Runner changes for one profile.
 *
 * Capacity is what runners *say*: a runner counts as ready only once its guest said `ready` on the
 * status channel (or `idle` after a job), not when its domain runs. So a rollover to a new
 * template goes in two steps, each a plain action of a level-triggered pass:
 * 1. create replacements on the new template, at most a surge (a quarter of the profile) beyond
 *    the runner count;
 * 2. destroy an outdated runner only once a replacement is ready, and never while it is busy
 *    (`busy` on the status channel): it is left to finish its job (or shut off, the ephemeral
 *    path) for up to `rollout.drainTimeout`, after which it is destroyed and the reason says so.
 * Scale-down takes, in order: stopped runners, outdated idle ones, booting ones, ready ones by
 * highest index (low indices are the stable names operators recognise); busy runners never.
 */
export function planRunners(
  profile: CompiledProfile,
  all: ObservedGuest[],
  serving: ObservedGuest | undefined,
  ctx: { now: Date; policy: Policy; facts: Facts },
  /** Names held by guests corral does not recognise: skipped, never created over. */
  taken: ReadonlySet<string> = new Set(),
  /** Why no runner may be created now (a CI system is failing), if so. */
  creationBlocked?: string,
): RunnerPlan {
  const { policy, now } = ctx;
  const actions: Action[] = [];
  const waits: Wait[] = [];
  const crashBackoff = ctx.facts.runnerBackoff[profile.name];
  const holdCrashed = crashBackoff !== undefined && Date.parse(crashBackoff.until) > ctx.now.getTime();
  const remainingGens = new Set<string>();
  const base = { profile: profile.name };
  const used = new Set(all.map((r) => r.index ?? 0));
  // A runner a job holds is left exactly as it is; it still counts towards the profile's runners.
  const claimed = all.filter((r) => ctx.facts.claimed?.includes(r.name));
  const runners = all.filter((r) => !ctx.facts.claimed?.includes(r.name));
  for (const r of claimed) remainingGens.add(r.meta.gen);
  const desired = Math.max(0, profile.runners - claimed.length);
  const drainTimeout = profile.rollout?.drainTimeoutSeconds ?? DEFAULT_DRAIN_TIMEOUT_SECONDS;
  const nextName = () => {
    let i = 1;
    while (used.has(i) || taken.has(runnerName(policy.prefix, profile.name, i))) i++;
    used.add(i);
    return runnerName(policy.prefix, profile.name, i);
  };
  const stale = new Map((ctx.facts.staleClaims ?? []).map((c) => [c.runner, c]));
  // A runner whose claim went stale is as good as dead: a job used it and no cleanup came.
  const isDead = (r: ObservedGuest) => r.state === 'shutoff' || r.state === 'crashed' || stale.has(r.name);
  const deadWhat = (r: ObservedGuest) => {
    const c = stale.get(r.name);
    return c ? `claim by job ${c.job} at ${c.claimedAt} is stale (no cleanup within ci.maxJobDuration)` : r.state;
  };
  const isOutdated = (r: ObservedGuest) => serving !== undefined && r.meta.gen !== serving.gen;
  const isBusy = (r: ObservedGuest) => conditionOf(r) === 'busy';
  const isReady = (r: ObservedGuest) => r.state === 'running' && conditionOf(r) === 'ready';
  const busyFor = (r: ObservedGuest) =>
    r.conditionSince ? Math.max(0, (now.getTime() - Date.parse(r.conditionSince)) / 1000) : 0;
  const byIndexDesc = (a: ObservedGuest, b: ObservedGuest) => (b.index ?? 0) - (a.index ?? 0);
  const removed = new Set<string>();
  const destroy = (r: ObservedGuest, reason: string) => {
    removed.add(r.name);
    actions.push({ ...base, action: 'destroy-runner', guest: r.name, reason });
  };

  const dead = runners.filter(isDead).sort(byIndexDesc);
  const alive = runners.filter((r) => !isDead(r));
  const outdated = alive.filter(isOutdated).sort(byIndexDesc);
  const current = alive.filter((r) => !isOutdated(r));

  // Dead runners: their slot is already empty. Beyond the runner count they just go; otherwise a
  // fresh clone takes the same name (ephemeral: a runner that shut off has done its job).
  let slots = Math.max(0, desired - alive.length);
  // Counted as current (booting) from here on: they are being recreated on the serving template.
  let recreated = 0;
  // Crashed runners left in place during the runner back-off: they keep their slot.
  let heldCrashed = 0;
  for (const r of dead) {
    if (!serving || slots === 0 || creationBlocked) {
      const why = !serving
        ? 'no template to replace it from'
        : slots === 0
          ? `${all.length} runners, want ${profile.runners}`
          : `its replacement waits (${creationBlocked})`;
      destroy(r, `${deadWhat(r)}; ${why}`);
      continue;
    }
    slots--;
    const crashed = r.state === 'crashed' && !stale.has(r.name);
    if (crashed && holdCrashed) {
      // A runner that dies on every boot would otherwise be replaced on every event: wait out the
      // back-off. It keeps its slot meanwhile, so no other runner is created in its place.
      waits.push({
        ...base,
        kind: 'runner-backoff',
        until: crashBackoff.until,
        reason: `${r.name} crashed; runners of this profile crashed ${crashBackoff.failures} time(s) in a row, so it is replaced at ${crashBackoff.until} (last: ${crashBackoff.lastError})`,
      });
      remainingGens.add(r.meta.gen);
      heldCrashed++;
      continue;
    }
    recreated++;
    removed.add(r.name);
    const reason = stale.has(r.name) ? deadWhat(r) : crashed ? 'runner crashed' : 'runner shut off (job done)';
    actions.push({
      ...base,
      action: 'replace-runner',
      guest: r.name,
      replacement: r.name,
      template: serving.name,
      templateHash: serving.meta.inputsHash,
      createFirst: false,
      reason,
      ...(crashed ? { crashed: true as const } : {}),
    });
    remainingGens.add(serving.gen ?? '');
  }

  // Outdated runners go once enough current runners are ready to stand in for them.
  const readyCurrent = current.filter(isReady).length;
  let replaceable = Math.max(0, readyCurrent + outdated.length - desired);
  const draining: string[] = [];
  for (const r of outdated) {
    if (isBusy(r)) {
      if (busyFor(r) > drainTimeout) {
        destroy(
          r,
          `busy for ${formatDuration(busyFor(r))} on outdated template ${r.meta.gen}: beyond rollout.drainTimeout (${formatDuration(drainTimeout)}), destroyed mid-job`,
        );
        replaceable = Math.max(0, replaceable - 1);
      } else draining.push(r.name);
      continue;
    }
    if (replaceable > 0) {
      replaceable--;
      const why = alive.length > desired ? 'a replacement is ready' : `${alive.length} runners, want ${desired}`;
      destroy(r, `on template ${r.meta.gen}, live is ${serving?.gen}; ${why}`);
    }
  }

  // Scale-down of current runners (outdated ones were handled above): idle first, busy never.
  const aliveAfter = alive.filter((r) => !removed.has(r.name));
  let excess = aliveAfter.length + recreated - desired;
  if (excess > 0 && outdated.every((r) => removed.has(r.name))) {
    const order = [
      ...current.filter((r) => conditionOf(r) === 'booting' || r.state !== 'running').sort(byIndexDesc),
      ...current.filter((r) => r.state === 'running' && conditionOf(r) === 'ready').sort(byIndexDesc),
    ];
    for (const r of order) {
      if (excess <= 0) break;
      excess--;
      destroy(r, `${aliveAfter.length + recreated} runners, want ${desired}`);
    }
    if (excess > 0)
      waits.push({
        ...base,
        kind: 'runners-busy',
        reason: `${excess} busy runner(s) beyond the count of ${desired} left to finish their job`,
      });
  }

  // Create: fill up to the runner count; while outdated runners remain, up to a surge beyond it.
  const surge = Math.max(1, Math.ceil(desired * policy.surgeFraction));
  const currentAfter = current.filter((r) => !removed.has(r.name)).length + recreated + heldCrashed;
  const aliveCount = aliveAfter.filter((r) => !removed.has(r.name)).length + recreated + heldCrashed;
  const outdatedLeft = outdated.filter((r) => !removed.has(r.name)).length;
  const room = outdatedLeft > 0 ? desired + surge - aliveCount : desired - aliveCount;
  const creates = serving && !creationBlocked ? Math.max(0, Math.min(desired - currentAfter, room)) : 0;
  for (let i = 0; i < creates && serving; i++) {
    actions.push({
      ...base,
      action: 'create-runner',
      guest: nextName(),
      template: serving.name,
      templateHash: serving.meta.inputsHash,
      reason:
        outdatedLeft > 0
          ? `replacing runners on older templates (live is ${serving.gen})`
          : `${aliveCount} runners, want ${desired}`,
    });
  }
  if (serving) remainingGens.add(serving.gen ?? '');
  for (const r of alive.filter((a) => !removed.has(a.name))) remainingGens.add(r.meta.gen);

  const booting = current.filter((r) => r.state === 'running' && conditionOf(r) === 'booting' && !removed.has(r.name));
  if (outdatedLeft > 0 && booting.length > 0)
    waits.push({
      ...base,
      kind: 'runner-booting',
      // What a runner says on its status channel is no lifecycle event: look again shortly.
      until: new Date(now.getTime() + READY_RECHECK_MS).toISOString(),
      reason: `outdated runners wait for ${booting.map((r) => r.name).join(', ')} to say ready`,
    });
  for (const r of outdated.filter((o) => isBusy(o) && !removed.has(o.name)))
    waits.push({
      ...base,
      kind: 'runner-draining',
      // Looked at again shortly (it may have gone idle), and at the latest when its drain times out.
      until: new Date(
        Math.min(now.getTime() + READY_RECHECK_MS, now.getTime() + (drainTimeout - busyFor(r)) * 1000 + 1000),
      ).toISOString(),
      reason: `${r.name} is busy on outdated template ${r.meta.gen}: draining (up to rollout.drainTimeout ${formatDuration(drainTimeout)})`,
    });
  return { actions, waits, remainingGens, booting: booting.map((r) => r.name), draining };
}
