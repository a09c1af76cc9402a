/**
 * The composition root of a pass (docs/design.md, "A pass"): observe the guests and read the
 * facts, plan, apply. Every caller — `reconcile --once`, `watch`, `plan`, `status`, the property
 * test — goes through here, so the wiring that runs in production is the wiring under test.
 */
import type { HostConfig } from '../config/host-config.js';
import type { Observation } from '../hypervisor/hypervisor.js';
import { plan } from '../plan/plan.js';
import { READY_RECHECK_MS } from '../plan/runners.js';
import type { AbsentSource, Facts, Plan, Policy } from '../plan/types.js';
import type { BaseResolver, Resolution } from '../images/resolve.js';
import type { CompiledProfile, CompiledView } from '../sources/view.js';
import type { RebuildRequests } from '../state/rebuild-requests.js';
import type { CredentialStore } from '../oci/credentials.js';
import { resolveFollowed } from './follow.js';
import { apply, buildsDone, retryDeregistrations, type ActionResult, type StartedBuild } from '../apply/apply.js';
import type { ApplyDeps } from '../apply/apply-deps.js';
import type { DeregistrationStore } from '../state/ci-deregistrations.js';
import { isStaleClaim, type ClaimStore } from '../state/claims.js';
import { DEFAULT_MAX_JOB_SECONDS } from '../config/host-config.js';
import type { CiOutageStore } from '../state/ci-outages.js';
import { readCiState, writeCiState } from '../ci/ci-state.js';
import { runningPulls } from '../state/staging-lock.js';

const noCredentials: CredentialStore = { get: () => Promise.resolve(undefined) };

export const SURGE_FRACTION = 0.25;

/** What a pass needs: everything apply() does, less what the pass derives from the view and the config. */
export interface PassDeps extends Omit<ApplyDeps, 'profiles' | 'concurrency' | 'registry'> {
  config: HostConfig;
  /** Resolves base versions before planning (absent: the compiled versions are used as they are). */
  resolver?: BaseResolver;
  /**
   * Garbage collection at the end of the pass, given the profiles as resolved, the builds in
   * flight, and whether the pass changed anything (a no-op pass need not collect every time).
   */
  collect?: (
    profiles: CompiledProfile[],
    inFlight: ReadonlySet<string> | undefined,
    changed: boolean,
  ) => Promise<unknown>;
  /** Runners held by CI jobs (GitLab): the planner leaves them alone. */
  claims?: ClaimStore;
  /** Rebuilds operators asked for (the console's rebuild button); none when absent. */
  rebuildRequests?: Pick<RebuildRequests, 'read'>;
  /** Registry credentials, for profiles that follow or publish to a registry (docs/oci-format.md). */
  credentials?: CredentialStore;
}

/** What the caller knows that the guests and the state dir do not say: a snapshot, read once per plan. */
export interface PassContext {
  /** Builds this process has queued or is waiting on (undefined: the planner does not run inside the owner). */
  inFlight?: readonly string[];
  /** Source dirs held within their grace period. */
  absentSources?: readonly AbsentSource[];
  /** Builds that failed on a configuration error (see Facts.configErrors). */
  configErrors?: Facts['configErrors'];
}

export interface PassResult {
  plan: Plan;
  observed: Observation;
  /** The profiles with their base versions resolved, as planned. */
  profiles: CompiledProfile[];
  results: ActionResult[];
  /** The builds this pass started; they finish in the background. */
  builds: StartedBuild[];
}

export function policyOf(config: HostConfig): Policy {
  return {
    prefix: config.prefix,
    keepTemplates: config.keepTemplates,
    surgeFraction: SURGE_FRACTION,
    concurrency: { ...config.concurrency },
  };
}

/** Observe, then plan: the read-only half of a pass (what `corral plan` prints). */
export async function observeAndPlan(
  view: CompiledView,
  deps: Pick<
    PassDeps,
    | 'config'
    | 'hypervisor'
    | 'clock'
    | 'backoff'
    | 'runnerBackoff'
    | 'ownerToken'
    | 'resolver'
    | 'claims'
    | 'rebuildRequests'
    | 'credentials'
    | 'publishes'
  > & {
    ciOutages?: Pick<CiOutageStore, 'read'>;
    deregistrations?: Pick<DeregistrationStore, 'read'>;
  },
  context: PassContext = {},
): Promise<{ plan: Plan; observed: Observation; facts: Facts; profiles: CompiledProfile[] }> {
  // Before planning, never downloading: a checksum list's new line is a new base version.
  const resolution: Resolution = deps.resolver
    ? await deps.resolver.resolve(view.profiles)
    : { profiles: view.profiles, unresolved: {} };
  const publishing = view.profiles.some((p) => p.publish);
  const pulling = view.profiles.some((p) => p.template || p.base.kind === 'oci');
  const [
    observed,
    backoff,
    runnerBackoff,
    ciOutages,
    claims,
    rebuildRequests,
    deregistrations,
    published,
    publishBackoff,
    pulls,
  ] = await Promise.all([
    deps.hypervisor.observe(),
    deps.backoff.read(),
    deps.runnerBackoff.read(),
    deps.ciOutages?.read(),
    deps.claims?.list(),
    deps.rebuildRequests?.read() ?? {},
    deps.deregistrations?.read(),
    publishing ? deps.publishes?.read() : undefined,
    publishing ? deps.publishes?.readBackoff() : undefined,
    pulling ? runningPulls(deps.config.imagesDir) : undefined,
  ]);
  // A claim holds the guest it was made on, not a later one that reuses its name; one older than
  // ci.maxJobDuration is stale (its cleanup never came) and holds nothing.
  const created = new Map(observed.guests.map((g) => [g.name, g.meta.createdAt]));
  const now = deps.clock();
  const held = claims?.filter((c) => created.get(c.runner) === c.guestCreatedAt);
  const maxJob = deps.config.ci?.maxJobSeconds ?? DEFAULT_MAX_JOB_SECONDS;
  const live = held?.filter((c) => !isStaleClaim(c, now, maxJob));
  const claimed = live?.map((c) => c.runner);
  // A watch wakes when a live claim goes stale, not only at its next resync (a second after the
  // bound: isStaleClaim is strict).
  const claimExpiries = Object.fromEntries(
    (live ?? []).flatMap((c) => {
      const at = Date.parse(c.claimedAt);
      return Number.isFinite(at) ? [[c.runner, new Date(at + maxJob * 1000 + 1000).toISOString()]] : [];
    }),
  );
  const staleClaims = held
    ?.filter((c) => isStaleClaim(c, now, maxJob))
    .map((c) => ({ runner: c.runner, job: c.job, claimedAt: c.claimedAt }));
  const facts: Facts = {
    ...(staleClaims && staleClaims.length > 0 ? { staleClaims } : {}),
    ...(Object.keys(claimExpiries).length > 0 ? { claimExpiries } : {}),
    ...(deregistrations && Object.keys(deregistrations).length > 0 ? { pendingDeregistrations: deregistrations } : {}),
    ...(ciOutages ? { ciOutages } : {}),
    ...(claimed ? { claimed } : {}),
    ...(deps.ownerToken ? { ownerToken: deps.ownerToken } : {}),
    ...(context.inFlight ? { inFlight: [...context.inFlight] } : {}),
    backoff,
    runnerBackoff,
    absentSources: [...(context.absentSources ?? [])],
    rebuildRequests,
    ...(published ? { published } : {}),
    ...(publishBackoff ? { publishBackoff } : {}),
    ...(pulls && Object.keys(pulls).length > 0 ? { pullsRunning: pulls } : {}),
    ...(context.configErrors ? { configErrors: { ...context.configErrors } } : {}),
    ...(Object.keys(resolution.unresolved).length > 0 ? { unresolvedBases: resolution.unresolved } : {}),
  };
  // Profiles that follow a registry tag get this pass's digest as their inputs hash (follow.ts).
  const followed = resolution.profiles.some((p) => p.template)
    ? await resolveFollowed(resolution.profiles, observed, deps.credentials ?? noCredentials)
    : { profiles: resolution.profiles, waits: [] };
  const profiles = followed.profiles;
  const input = { profiles, observed, now: deps.clock(), policy: policyOf(deps.config), facts };
  const planned = plan(input);
  const withWaits = followed.waits.length > 0 ? { ...planned, waits: [...followed.waits, ...planned.waits] } : planned;
  return { plan: withWaits, observed, facts, profiles };
}

/** One level-triggered pass: recompute everything from what is observed now, then act. */
export async function runPass(view: CompiledView, deps: PassDeps, context: PassContext = {}): Promise<PassResult> {
  const started = deps.clock().getTime();
  // Before planning, so the plan's waits (and the watch's requeue) see the new retry times.
  await retryDeregistrations(new Map(view.profiles.map((p) => [p.name, p])), deps).catch((error: unknown) =>
    deps.log.warn({ error: (error as Error).message }, 'could not retry failed deregistrations'),
  );
  const { plan: thePlan, observed, profiles } = await observeAndPlan(view, deps, context);
  const applied = await apply(thePlan.actions, {
    ...deps,
    registry: {
      credentials: deps.credentials ?? noCredentials,
      stateDir: deps.config.stateDir,
      prefix: deps.config.prefix,
      clock: deps.clock,
      log: deps.log,
    },
    profiles: new Map(profiles.map((p) => [p.name, p])),
    concurrency: deps.config.concurrency,
    generation: view.generation,
  });
  if (deps.ci && view.profiles.some((p) => p.ci?.kind === 'github'))
    await sweepRegistrations(view, deps, thePlan, observed);
  if (deps.collect) {
    // Builds queued now or earlier keep their files: they may be between making them and defining the guest.
    const inFlight = new Set([...(context.inFlight ?? []), ...applied.builds.map((b) => b.name)]);
    await deps
      .collect(profiles, inFlight, thePlan.actions.length > 0)
      .catch((error: unknown) =>
        deps.log.warn({ error: (error as Error).message }, 'garbage collection failed; the next pass tries again'),
      );
  }
  const counts: Record<string, number> = {};
  for (const a of thePlan.actions) counts[a.action] = (counts[a.action] ?? 0) + 1;
  deps.log.info(
    {
      generation: view.generation,
      durationMs: deps.clock().getTime() - started,
      guests: observed.guests.length,
      actions: counts,
      failed: applied.results.filter((r) => !r.ok).length,
      waits: thePlan.waits.length,
      ...(thePlan.requeue ? { requeueAt: thePlan.requeue.at } : {}),
    },
    'pass done',
  );
  return { plan: thePlan, observed, profiles, ...applied };
}

/** Back-off between passes retried after transient failures (libvirtd restarting, a lock race). */
export const TRANSIENT_RETRY = { firstMs: 1000, maxMs: 30_000 } as const;

/**
 * How long `reconcile --once` waits for runners to say ready when nothing else moves: a
 * distribution image with cloud-init takes minutes to boot under TCG on a busy host.
 */
export const READY_WAIT_MS = 10 * 60_000;

/**
 * `reconcile --once`: passes until nothing is left to do (a pass may make room for the next one:
 * a promoted template lets runners roll), waiting for the builds each pass starts, and for the
 * runners it started to say ready (a rollover destroys an old runner only once its replacement is
 * ready), up to READY_WAIT_MS without progress; between such passes it sleeps until the plan's
 * requeue time. Busy runners are not waited for: a later run replaces them once they are idle.
 * A pass whose failures were all transient is retried after a back-off; config and command
 * failures end the run.
 */
export async function converge(
  view: CompiledView,
  deps: PassDeps,
  context: Omit<PassContext, 'inFlight'> = {},
  maxPasses = 20,
): Promise<{ passes: number; results: ActionResult[]; last: Plan }> {
  const results: ActionResult[] = [];
  let retryMs: number = TRANSIENT_RETRY.firstMs;
  let productive = 0;
  let lastProgress = deps.clock().getTime();
  let stopped = false;
  void deps.stopping?.then(() => (stopped = true));
  for (let passes = 1; ; passes++) {
    const pass = await runPass(view, deps, context);
    const all = [...pass.results, ...(await buildsDone(pass.builds))];
    results.push(...all);
    if (pass.plan.actions.length === 0) {
      const now = deps.clock().getTime();
      const waitMore = pass.plan.booting.length > 0 && now - lastProgress < READY_WAIT_MS;
      if (!waitMore || stopped) return { passes, results, last: pass.plan };
      // What a runner says is no event: look again soon, or at the requeue when that is sooner
      // (a requeue days away, e.g. rebuild.maxAge, must not put the look off).
      const until = pass.plan.requeue ? Date.parse(pass.plan.requeue.at) - now : READY_RECHECK_MS;
      await Promise.race([
        deps.sleep(Math.max(deps.pollMs, Math.min(until, READY_RECHECK_MS))),
        deps.stopping ?? new Promise(() => undefined),
      ]);
      continue;
    }
    const progressed = all.some((r) => r.ok);
    const transient = all.some((r) => r.errorKind === 'transient');
    if (progressed) lastProgress = deps.clock().getTime();
    if ((!progressed && !transient) || ++productive >= maxPasses || stopped) {
      // Nothing more will move this run: report what the next pass would wait for, and why.
      return { passes, results, last: (await observeAndPlan(view, deps, context)).plan };
    }
    if (!progressed) {
      deps.log.warn({ retryInMs: retryMs }, 'transient failures; retrying the pass');
      await deps.sleep(retryMs);
      retryMs = Math.min(retryMs * 2, TRANSIENT_RETRY.maxMs);
    } else retryMs = TRANSIENT_RETRY.firstMs;
  }
}

/**
 * Deletes this host's GitHub registrations whose guest is gone (destroyed by hand, crashed and
 * removed, lost in a crash of corral itself). Guests created by this very pass are not observed
 * yet, so the plan's new runner names count as alive too.
 */
async function sweepRegistrations(view: CompiledView, deps: PassDeps, thePlan: Plan, observed: Observation) {
  if (!deps.ci) return;
  const alive = new Set(observed.guests.filter((g) => g.role === 'runner').map((g) => g.name));
  for (const a of thePlan.actions) {
    if (a.action === 'create-runner') alive.add(a.guest);
    if (a.action === 'replace-runner') alive.add(a.replacement);
  }
  // A profile backing off does not hammer a failing API: its scope is swept once the wait is over.
  const active = (await deps.ciOutages?.read()) ?? {};
  const now = deps.clock();
  const waiting = (name: string) => Date.parse(active[name]?.retryAt ?? '') > now.getTime();
  const swept = await deps.ci.sweep(
    view.profiles.filter((p) => !waiting(p.name)),
    alive,
  );
  // A registration that failed in this pass already started (or extended) the profile's back-off.
  const current = (await deps.ciOutages?.read()) ?? {};
  for (const f of swept.failures) {
    if (Date.parse(current[f.profile]?.retryAt ?? '') > now.getTime()) continue;
    await deps.ciOutages?.recordFailure(f.profile, f.error, now);
  }
  // Scopes not swept this time (backing off) keep what the last look saw.
  const previous = (await readCiState(deps.config.stateDir))?.scopes ?? [];
  const fresh = new Set(swept.scopes.map((sc) => sc.scope));
  const scopes = [...previous.filter((sc) => !fresh.has(sc.scope)), ...swept.scopes];
  await writeCiState(deps.config.stateDir, { updatedAt: deps.clock().toISOString(), scopes }).catch((error: unknown) =>
    deps.log.warn({ error: (error as Error).message }, 'could not write ci-state.json'),
  );
}
