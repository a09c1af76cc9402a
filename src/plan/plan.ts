import type { ObservedGuest } from '../hypervisor/hypervisor.js';
import { makeGen, parseName, rebuildName, templateName } from '../hypervisor/names.js';
import type { CompiledProfile } from '../sources/view.js';
import { formatDuration } from '../util/duration.js';
import { formatReference, parseReference, pinned } from '../oci/reference.js';
import { createdAt, newestFirst } from './gen-time.js';
import { planRunners } from './runners.js';
import {
  inFlightKey,
  type Action,
  type BackoffEntry,
  type CiOutage,
  type Facts,
  type Plan,
  type PlanInput,
  type Policy,
  type Requeue,
  type Wait,
} from './types.js';

/**
 * The pure heart of corral: from the desired profiles and the observed guests, the actions that
 * converge them, the waits that hold a profile back, and when to look again with no outside event
 * (docs/design.md, "The planner"). No I/O, and the input is never changed: the same input always
 * gives the same plan.
 */
export function plan(input: PlanInput): Plan {
  const { profiles, observed, now, policy, facts } = input;
  const ctx: Ctx = { now, policy, facts, wakes: [] };
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
    const result = planProfile(profile, byProfile.get(profile.name) ?? [], ctx, taken);
    actions.push(...result.actions);
    waits.push(...result.waits);
    booting.push(...result.booting);
    draining.push(...result.draining);
    byProfile.delete(profile.name);
  }
  for (const [name, guests] of [...byProfile].sort(([a], [b]) => a.localeCompare(b))) {
    actions.push(...planRemoved(name, guests, facts));
  }
  const unrecognized = observed.unrecognized.map((u) =>
    parseName(policy.prefix, u.name)
      ? { ...u, reason: `${u.reason}; it holds a name corral would use, so corral skips that name` }
      : u,
  );
  for (const w of waits) if (w.until) ctx.wakes.push({ at: w.until, reason: `${w.profile}: ${w.kind}` });
  for (const s of facts.absentSources) ctx.wakes.push({ at: s.until, reason: `grace period of ${s.dir} ends` });
  for (const [runner, at] of Object.entries(facts.claimExpiries ?? {}))
    ctx.wakes.push({ at, reason: `${runner}: its claim outlives ci.maxJobDuration` });
  const requeue = earliest(ctx.wakes, now);
  return { actions, waits, unrecognized, booting, draining, ...(requeue ? { requeue } : {}) };
}

interface Ctx {
  now: Date;
  policy: Policy;
  facts: Facts;
  /** Times at which the answer changes by itself, collected while planning. */
  wakes: Requeue[];
}

/** The first wake-up strictly after now. */
function earliest(wakes: Requeue[], now: Date): Requeue | undefined {
  let best: Requeue | undefined;
  for (const w of wakes) {
    const t = Date.parse(w.at);
    if (Number.isNaN(t) || t <= now.getTime()) continue;
    if (!best || t < Date.parse(best.at)) best = w;
  }
  return best;
}

function planProfile(
  profile: CompiledProfile,
  guests: ObservedGuest[],
  ctx: Ctx,
  taken: ReadonlySet<string>,
): { actions: Action[]; waits: Wait[]; booting: string[]; draining: string[] } {
  const { now, policy, facts } = ctx;
  const actions: Action[] = [];
  const waits: Wait[] = [];
  const base = { profile: profile.name };
  const templates = guests.filter((g) => g.role === 'template').sort(newestFirst);
  let inFlight: ObservedGuest | undefined;

  for (const rebuild of guests.filter((g) => g.role === 'rebuild').sort(newestFirst)) {
    if (isInFlight(rebuild, facts)) {
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
      templates.push({ ...rebuild, role: 'template', name: template });
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
  // A copy: the observation handed in is never reordered or changed.
  templates.sort(newestFirst);

  const current = templates.filter((t) => t.meta.inputsHash === profile.inputsHash);
  const newest = current[0];
  const maxAge = profile.rebuild.maxAgeSeconds;
  // A follower builds nothing: pulling the digest it already has again would make nothing new.
  const requestedAt = profile.template ? undefined : facts.rebuildRequests?.[profile.name];
  const ageSeconds = newest ? (now.getTime() - createdAt(newest).getTime()) / 1000 : 0;
  const needReason = !newest
    ? templates.length === 0
      ? 'no template yet'
      : `inputs changed (live template ${templates[0]?.gen} was built from ${templates[0]?.meta.inputsHash.slice(7, 19)}, want ${profile.inputsHash.slice(7, 19)})`
    : maxAge !== undefined && ageSeconds > maxAge
      ? `template ${newest.gen} is ${formatDuration(ageSeconds)} old (rebuild.maxAge ${formatDuration(maxAge)})`
      : requestedAt !== undefined && createdAt(newest).getTime() < Date.parse(requestedAt)
        ? `rebuild requested at ${requestedAt}`
        : undefined;
  if (newest && maxAge !== undefined && !needReason) {
    // The template turns too old by itself: look again just after that moment.
    const at = new Date(createdAt(newest).getTime() + maxAge * 1000 + 1).toISOString();
    ctx.wakes.push({ at, reason: `${profile.name}: template ${newest.gen} reaches rebuild.maxAge` });
  }

  // Queued in this process but not defined yet: invisible to observation, yet already on its way.
  const queued = inFlight
    ? undefined
    : (facts.inFlight ?? []).find((n) => parseName(policy.prefix, n)?.profile === profile.name);
  const unresolved = facts.unresolvedBases?.[profile.name];
  if (unresolved) {
    // Transient: whatever runs keeps running on the template it has; the resolver tries again at retryAt.
    waits.push({
      ...base,
      kind: 'base-unresolved',
      until: unresolved.retryAt,
      reason: `base not resolved: ${unresolved.reason}; live template and runners kept`,
    });
  }
  const work = profile.template ? 'pull' : 'build';
  if (queued) {
    waits.push(
      profile.template
        ? { ...base, kind: 'pull-queued', reason: `pull of ${queued} queued or running` }
        : { ...base, kind: 'build-queued', reason: `build ${queued} queued or starting` },
    );
  } else if (inFlight) {
    const started = createdAt(inFlight).getTime();
    waits.push({
      ...base,
      kind: 'build-in-flight',
      // Its provision.timeout deadline: the build is judged by then at the latest.
      until: new Date(started + profile.provision.timeoutSeconds * 1000).toISOString(),
      reason: `build ${inFlight.name} in flight for ${formatDuration((now.getTime() - started) / 1000)}`,
    });
  } else if (needReason && !unresolved) {
    const backoff = facts.backoff[profile.name];
    const configError = facts.configErrors?.[profile.name];
    if (configError?.inputsHash === profile.inputsHash) {
      waits.push({
        ...base,
        kind: 'config-error',
        reason: `${needReason}; the last build failed on a configuration error, so none starts until the profile changes: ${configError.error}`,
      });
    } else if (backoff && !overridden(backoff, requestedAt) && Date.parse(backoff.until) > now.getTime()) {
      waits.push({
        ...base,
        kind: 'build-backoff',
        until: backoff.until,
        reason: backoff.host
          ? `${needReason}; backing off after a host problem until ${backoff.until} (${backoff.failures} failure(s); last: ${backoff.lastError})`
          : `${needReason}; backing off after ${backoff.failures} failed ${work}(s) until ${backoff.until} (last: ${backoff.lastError})`,
      });
    } else if (profile.template) {
      // A follower's "build" is a pull of the digest its tag resolved to, landed under a generation of its own.
      const digest = profile.template.digest;
      const running = digest ? facts.pullsRunning?.[digest.replace(/^sha256:/, '')] : undefined;
      if (running) {
        waits.push({
          ...base,
          kind: 'pull-queued',
          reason: `${profile.template.oci}@${digest} is being pulled (${running})`,
        });
      } else if (digest) {
        const gen = freshGen(now, profile.inputsHash, guests);
        const template = templateName(policy.prefix, profile.name, gen);
        actions.push({
          ...base,
          action: 'pull',
          guest: template,
          gen,
          template,
          reference: formatReference(pinned(parseReference(profile.template.oci), digest)),
          inputsHash: profile.inputsHash,
          reason: needReason,
        });
      }
      // No digest: the tag did not resolve this pass, and the registry wait (follow.ts) says why.
    } else if (profile.base.kind === 'oci' && facts.pullsRunning?.[profile.baseVersion.replace(/^sha256:/, '')]) {
      // The owner's build is fetching its base (not a guest yet): seen from `plan` or `status`.
      const running = facts.pullsRunning[profile.baseVersion.replace(/^sha256:/, '')];
      waits.push({
        ...base,
        kind: 'build-queued',
        reason: `${needReason}; base ${profile.base.ref} (${profile.baseVersion.slice(0, 19)}…) is being pulled for the build (${running})`,
      });
    } else {
      const gen = freshGen(now, profile.inputsHash, guests);
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
  const outage = ctx.facts.ciOutages?.[profile.name];
  const creationBlocked = outage && Date.parse(outage.retryAt) > ctx.now.getTime() ? formatOutage(outage) : undefined;
  if (outage && creationBlocked)
    waits.push({ ...base, kind: 'ci-outage', until: outage.retryAt, reason: creationBlocked });
  for (const [runner, d] of Object.entries(ctx.facts.pendingDeregistrations ?? {}).sort(([a], [b]) =>
    a.localeCompare(b),
  )) {
    if (d.profile !== profile.name) continue;
    waits.push({
      ...base,
      kind: 'ci-deregister',
      until: d.retryAt,
      reason: `deregistering ${runner} failed ${d.failures} time(s) since ${d.since.slice(11, 16)}, retry at ${d.retryAt.slice(11, 16)}: ${d.lastError}`,
    });
  }
  const runnerPlan = planRunners(profile, runners, serving, ctx, taken, creationBlocked);
  actions.push(...runnerPlan.actions);
  waits.push(...runnerPlan.waits);
  if (!serving && profile.runners > 0)
    waits.push({ ...base, kind: 'no-template', reason: 'runners wait for the first template' });

  if (profile.publish && newest) planPublish(profile, newest.name, ctx, actions, waits);

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

/**
 * `publish: {oci}`: the tag should point at the live template. Level-triggered on the record of the
 * last successful push, so a failed push stays pending (backed off) until one succeeds, and a
 * template promoted while a push was failing is the one pushed next.
 */
function planPublish(profile: CompiledProfile, live: string, ctx: Ctx, actions: Action[], waits: Wait[]): void {
  const reference = profile.publish!.oci;
  const last = ctx.facts.published?.[profile.name];
  if (last?.template === live && last.reference === reference) return;
  const base = { profile: profile.name };
  if (ctx.facts.inFlight?.includes(inFlightKey({ action: 'publish', guest: live }))) {
    waits.push({ ...base, kind: 'publish-queued', reason: `publish of ${live} to ${reference} queued or running` });
    return;
  }
  const why = last
    ? last.reference === reference
      ? `${reference} points at ${last.template}, not the live template`
      : `published to ${last.reference} until now`
    : `${live} is not published yet`;
  const backoff = ctx.facts.publishBackoff?.[profile.name];
  if (backoff && Date.parse(backoff.until) > ctx.now.getTime()) {
    waits.push({
      ...base,
      kind: 'publish-backoff',
      until: backoff.until,
      reason: `publish of ${live} to ${reference} pending: ${backoff.failures} failed push(es), retrying at ${backoff.until} (last: ${backoff.lastError})`,
    });
    return;
  }
  actions.push({ ...base, action: 'publish', guest: live, template: live, reference, reason: why });
}

/** Guests of a profile that no source declares any more (removed or masked). */
function planRemoved(name: string, guests: ObservedGuest[], facts: Facts): Action[] {
  const actions: Action[] = [];
  const reason = 'profile no longer declared by any source (removed or masked)';
  for (const g of guests) {
    if (g.role === 'runner') actions.push({ profile: name, action: 'destroy-runner', guest: g.name, reason });
    else if (g.role === 'rebuild' && !isInFlight(g, facts)) {
      actions.push({ profile: name, action: 'discard', guest: g.name, reason });
    }
  }
  for (const g of guests.filter((t) => t.role === 'template').sort(newestFirst)) {
    actions.push({ profile: name, action: 'retire-template', guest: g.name, reason });
  }
  return actions;
}

function isInFlight(rebuild: ObservedGuest, facts: Facts): boolean {
  if (facts.ownerToken === undefined || rebuild.meta.owner !== facts.ownerToken) return false;
  return facts.inFlight ? facts.inFlight.includes(rebuild.name) : true;
}

/** "GitHub: 503 since 14:02, retry at 14:04" (UTC, like every time corral prints). */
export function formatOutage(o: CiOutage): string {
  const hhmm = (iso: string) => iso.slice(11, 16);
  return `${o.system}: ${o.summary} since ${hhmm(o.since)}, retry at ${hhmm(o.retryAt)}`;
}

/** An operator's rebuild request made after the last failure is an explicit "try again now". */
function overridden(backoff: BackoffEntry, requestedAt: string | undefined): boolean {
  return (
    requestedAt !== undefined &&
    backoff.failedAt !== undefined &&
    Date.parse(requestedAt) > Date.parse(backoff.failedAt)
  );
}

/**
 * A generation name no guest of the profile has: a second rebuild of unchanged inputs within the
 * same second as the last one (a forced rebuild) would otherwise get the live template's name.
 * Named by the next free second; the stamp says when the build was asked for, to the second.
 */
function freshGen(now: Date, inputsHash: string, guests: readonly ObservedGuest[]): string {
  const taken = new Set(guests.map((g) => g.gen ?? g.meta.gen));
  for (let t = now.getTime(); ; t += 1000) {
    const gen = makeGen(new Date(t), inputsHash);
    if (!taken.has(gen)) return gen;
  }
}
