import type { ObservedGuest } from '../hypervisor/hypervisor.js';
import { runnerName } from '../hypervisor/names.js';
import type { CompiledProfile } from '../sources/view.js';
import type { Action, Facts, Policy, Wait } from './types.js';

export interface RunnerPlan {
  actions: Action[];
  waits: Wait[];
  /** Template generations that runners still use after this plan (replaced runners count until gone). */
  remainingGens: Set<string>;
}

/**
 * Runner changes for one profile. Scale-down removes the least useful first: stopped runners,
 * then runners on an outdated template, then the highest index — low indices are the stable names
 * operators recognise. (Idle-first would need the CI system's view of jobs, which corral lacks.)
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
  const { policy } = ctx;
  const actions: Action[] = [];
  const waits: Wait[] = [];
  const crashBackoff = ctx.facts.runnerBackoff[profile.name];
  const holdCrashed = crashBackoff !== undefined && Date.parse(crashBackoff.until) > ctx.now.getTime();
  const remainingGens = new Set<string>();
  const base = { profile: profile.name };
  const used = new Set(all.map((r) => r.index ?? 0));
  // A runner a job holds is left exactly as it is; it still counts towards the profile's runners.
  const held = all.filter((r) => ctx.facts.claimed?.includes(r.name));
  const runners = all.filter((r) => !ctx.facts.claimed?.includes(r.name));
  for (const r of held) remainingGens.add(r.meta.gen);
  const nextName = () => {
    let i = 1;
    while (used.has(i) || taken.has(runnerName(policy.prefix, profile.name, i))) i++;
    used.add(i);
    return runnerName(policy.prefix, profile.name, i);
  };
  const isDead = (r: ObservedGuest) => r.state === 'shutoff' || r.state === 'crashed';
  const isOutdated = (r: ObservedGuest) => serving !== undefined && r.meta.gen !== serving.gen;
  const byIndexDesc = (a: ObservedGuest, b: ObservedGuest) => (b.index ?? 0) - (a.index ?? 0);

  const dead = runners.filter(isDead).sort(byIndexDesc);
  const alive = runners.filter((r) => !isDead(r));
  // Removal order for scale-down: dead, then outdated, then newest index.
  const candidates = [
    ...dead,
    ...alive.filter(isOutdated).sort(byIndexDesc),
    ...alive.filter((r) => !isOutdated(r)).sort(byIndexDesc),
  ];
  const excess = Math.max(0, all.length - profile.runners);
  const removed = new Set(candidates.slice(0, excess).map((r) => r.name));
  for (const r of candidates.slice(0, excess)) {
    const reason = isDead(r)
      ? `${r.state}; ${all.length} runners, want ${profile.runners}`
      : `${all.length} runners, want ${profile.runners}`;
    actions.push({ ...base, action: 'destroy-runner', guest: r.name, reason });
  }

  for (const r of dead.filter((d) => !removed.has(d.name))) {
    if (!serving || creationBlocked) {
      actions.push({
        ...base,
        action: 'destroy-runner',
        guest: r.name,
        reason: serving
          ? `${r.state}; its replacement waits (${creationBlocked})`
          : `${r.state} and no template to replace it from`,
      });
      continue;
    }
    const crashed = r.state === 'crashed';
    if (crashed && holdCrashed) {
      // A runner that dies on every boot would otherwise be replaced on every event: wait out the back-off.
      waits.push({
        ...base,
        kind: 'runner-backoff',
        until: crashBackoff.until,
        reason: `${r.name} crashed; runners of this profile crashed ${crashBackoff.failures} time(s) in a row, so it is replaced at ${crashBackoff.until} (last: ${crashBackoff.lastError})`,
      });
      remainingGens.add(r.meta.gen);
      continue;
    }
    // Ephemeral: a runner that shut off has done its job; its slot is already empty, so destroy first and reuse the name.
    const reason = crashed ? 'runner crashed' : 'runner shut off (job done)';
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

  const kept = alive.filter((r) => !removed.has(r.name));
  if (serving && !creationBlocked) {
    for (let i = all.length - removed.size; i < profile.runners; i++) {
      actions.push({
        ...base,
        action: 'create-runner',
        guest: nextName(),
        template: serving.name,
        templateHash: serving.meta.inputsHash,
        reason: `${all.length - removed.size} runners, want ${profile.runners}`,
      });
    }
  }
  if (serving) remainingGens.add(serving.gen ?? '');
  const surge = Math.max(1, Math.ceil(profile.runners * policy.surgeFraction));
  let replacing = 0;
  for (const r of kept.sort((a, b) => (a.index ?? 0) - (b.index ?? 0))) {
    remainingGens.add(r.meta.gen);
    if (!serving || creationBlocked || !isOutdated(r) || replacing >= surge) continue;
    replacing++;
    actions.push({
      ...base,
      action: 'replace-runner',
      guest: r.name,
      replacement: nextName(),
      template: serving.name,
      templateHash: serving.meta.inputsHash,
      createFirst: true,
      reason: `on template ${r.meta.gen}; live is ${serving.gen}`,
    });
  }
  return { actions, waits, remainingGens };
}
