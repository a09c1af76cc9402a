import type { ObservedGuest } from '../hypervisor/hypervisor.js';
import { makeGen, parseName, rebuildName, templateName } from '../hypervisor/names.js';
import type { CompiledProfile } from '../sources/view.js';
import { formatDuration } from '../util/duration.js';
import { createdAt, newestFirst } from './gen-time.js';
import { planRunners } from './runners.js';
import type { Action, Plan, PlanInput, Policy, Wait } from './types.js';

/**
 * The pure heart of corral: from the desired profiles and the observed guests, the actions that
 * converge them. No I/O; the same input always gives the same plan.
 */
export function plan(input: PlanInput): Plan {
  const { profiles, observed, now, policy } = input;
  const byProfile = new Map<string, ObservedGuest[]>();
  for (const guest of observed.guests) {
    const list = byProfile.get(guest.profile) ?? [];
    list.push(guest);
    byProfile.set(guest.profile, list);
  }
  const actions: Action[] = [];
  const waits: Wait[] = [];
  // A guest we did not create may sit on a name we would give a runner: never create over it.
  const taken = new Set(observed.unrecognized.map((u) => u.name));
  const booting: string[] = [];
  const draining: string[] = [];
  for (const profile of profiles) {
    const result = planProfile(profile, byProfile.get(profile.name) ?? [], now, policy, taken);
    actions.push(...result.actions);
    waits.push(...result.waits);
    booting.push(...result.booting);
    draining.push(...result.draining);
    byProfile.delete(profile.name);
  }
  for (const [name, guests] of [...byProfile].sort(([a], [b]) => a.localeCompare(b))) {
    actions.push(...planRemoved(name, guests, policy));
  }
  const unrecognized = observed.unrecognized.map((u) =>
    parseName(policy.prefix, u.name)
      ? { ...u, reason: `${u.reason}; it holds a name corral would use, so corral skips that name` }
      : u,
  );
  return { actions, waits, unrecognized, booting, draining };
}

function planProfile(
  profile: CompiledProfile,
  guests: ObservedGuest[],
  now: Date,
  policy: Policy,
  taken: ReadonlySet<string>,
): { actions: Action[]; waits: Wait[]; booting: string[]; draining: string[] } {
  const actions: Action[] = [];
  const waits: Wait[] = [];
  const base = { profile: profile.name };
  const templates = guests.filter((g) => g.role === 'template').sort(newestFirst);
  let inFlight: ObservedGuest | undefined;

  for (const rebuild of guests.filter((g) => g.role === 'rebuild').sort(newestFirst)) {
    if (isInFlight(rebuild, policy)) {
      inFlight ??= rebuild;
      continue;
    }
    const verdict = rebuild.verdict;
    if (rebuild.state !== 'running' && verdict?.ok && rebuild.meta.inputsHash === profile.inputsHash && rebuild.gen) {
      const template = templateName(policy.prefix, profile.name, rebuild.gen);
      actions.push({
        ...base,
        action: 'promote',
        guest: rebuild.name,
        template,
        reason: 'orphaned rebuild finished successfully',
      });
      templates.unshift({ ...rebuild, role: 'template', name: template });
      continue;
    }
    const why =
      rebuild.state === 'running'
        ? 'orphaned rebuild: the process that started it no longer holds the lock'
        : verdict && !verdict.ok
          ? `rebuild failed: ${verdict.reason}`
          : rebuild.meta.inputsHash !== profile.inputsHash
            ? 'rebuild of outdated inputs'
            : 'rebuild stopped without a verdict';
    actions.push({ ...base, action: 'discard', guest: rebuild.name, reason: why });
  }
  templates.sort(newestFirst);

  const current = templates.filter((t) => t.meta.inputsHash === profile.inputsHash);
  const newest = current[0];
  const maxAge = profile.rebuild.maxAgeSeconds;
  const ageSeconds = newest ? (now.getTime() - createdAt(newest).getTime()) / 1000 : 0;
  const needReason = !newest
    ? templates.length === 0
      ? 'no template yet'
      : `inputs changed (live template ${templates[0]?.gen} was built from ${templates[0]?.meta.inputsHash.slice(7, 19)}, want ${profile.inputsHash.slice(7, 19)})`
    : maxAge !== undefined && ageSeconds > maxAge
      ? `template ${newest.gen} is ${formatDuration(ageSeconds)} old (rebuild.maxAge ${formatDuration(maxAge)})`
      : undefined;

  // Queued in this process but not defined yet: invisible to observation, yet already on its way.
  const queued = inFlight
    ? undefined
    : [...(policy.inFlight ?? [])].find((n) => parseName(policy.prefix, n)?.profile === profile.name);
  if (queued) {
    waits.push({ ...base, reason: `build ${queued} queued or starting` });
  } else if (inFlight) {
    waits.push({
      ...base,
      reason: `build ${inFlight.name} in flight for ${formatDuration((now.getTime() - createdAt(inFlight).getTime()) / 1000)}`,
    });
  } else if (needReason) {
    const backoff = policy.backoff[profile.name];
    if (backoff && Date.parse(backoff.until) > now.getTime()) {
      waits.push({
        ...base,
        reason: backoff.host
          ? `${needReason}; backing off after a host problem until ${backoff.until} (${backoff.failures} failure(s); last: ${backoff.lastError})`
          : `${needReason}; backing off after ${backoff.failures} failed build(s) until ${backoff.until} (last: ${backoff.lastError})`,
      });
    } else {
      const gen = makeGen(now, profile.inputsHash);
      actions.push({
        ...base,
        action: 'build',
        guest: rebuildName(policy.prefix, profile.name, gen),
        gen,
        template: templateName(policy.prefix, profile.name, gen),
        inputsHash: profile.inputsHash,
        reason: needReason,
      });
    }
  }

  // Runners follow the newest current template, or the newest template at all while a rebuild is pending.
  const serving = newest ?? templates[0];
  const runners = guests.filter((g) => g.role === 'runner');
  const runnerPlan = planRunners(profile, runners, serving, policy, now, taken);
  actions.push(...runnerPlan.actions);
  waits.push(...runnerPlan.waits);
  if (!serving && profile.runners > 0) waits.push({ ...base, reason: 'runners wait for the first template' });

  const keep = new Set(templates.slice(0, policy.keepTemplates).map((t) => t.name));
  if (serving) keep.add(serving.name);
  for (const template of templates) {
    if (keep.has(template.name) || runnerPlan.remainingGens.has(template.gen ?? '')) continue;
    actions.push({
      ...base,
      action: 'retire-template',
      guest: template.name,
      reason: `beyond keepTemplates (${policy.keepTemplates}) and no runner uses it`,
    });
  }
  return { actions, waits, booting: runnerPlan.booting, draining: runnerPlan.draining };
}

/** Guests of a profile that no source declares any more (removed or masked). */
function planRemoved(name: string, guests: ObservedGuest[], policy: Policy): Action[] {
  const actions: Action[] = [];
  const reason = 'profile no longer declared by any source (removed or masked)';
  for (const g of guests) {
    if (g.role === 'runner') actions.push({ profile: name, action: 'destroy-runner', guest: g.name, reason });
    else if (g.role === 'rebuild' && !isInFlight(g, policy)) {
      actions.push({ profile: name, action: 'discard', guest: g.name, reason });
    }
  }
  for (const g of guests.filter((t) => t.role === 'template').sort(newestFirst)) {
    actions.push({ profile: name, action: 'retire-template', guest: g.name, reason });
  }
  return actions;
}

function isInFlight(rebuild: ObservedGuest, policy: Policy): boolean {
  if (policy.ownerToken === undefined || rebuild.meta.owner !== policy.ownerToken) return false;
  return policy.inFlight ? policy.inFlight.has(rebuild.name) : true;
}
