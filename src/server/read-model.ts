import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { observeAndPlan } from '../reconcile/pass.js';
import type { HostConfig } from '../config/host-config.js';
import type { Hypervisor, Observation, ObservedGuest } from '../hypervisor/hypervisor.js';
import { parseName, templateName } from '../hypervisor/names.js';
import { createdAt, newestFirst } from '../plan/gen-time.js';
import type { BackoffEntry, Plan, Wait } from '../plan/types.js';
import type { CompiledProfile, CompiledView } from '../sources/view.js';
import { backoffStores } from '../reconcile/runtime.js';
import { profileCiSummary, isBusy, readCiFacts, type CiFacts, type ProfileCiSummary } from '../ci/ci-status.js';
import { BackoffStore } from '../state/backoff-store.js';
import { readCurrentView } from '../state/compiled-store.js';
import type { Event, EventLog } from '../state/events.js';
import { isAlive, readLockHolder, type LockHolder } from '../state/lock.js';
import { RebuildRequests } from '../state/rebuild-requests.js';
import { readWatchStatus, type WatchStatus } from '../state/watch-status.js';

/**
 * What the API and the dashboard show, computed from what exists on disk and what the hypervisor
 * reports: the stored view, an observation, the plan a pass would make, events.jsonl, the lock and
 * watch-status.json. Every function here only reads; swapping in a richer source (typed waits,
 * stored manifests, a build history file) changes one function, not the API.
 */
export interface ReadDeps {
  config: HostConfig;
  /** The hypervisor to read from (a fresh read-only copy when another process owns the guests). */
  hypervisor(): Promise<Hypervisor>;
  events: EventLog;
  clock: () => Date;
  /** The sources compiled now, shown (generation 0) before any pass stored a view. */
  preview?: () => Promise<CompiledView | undefined>;
}

export interface PendingReason {
  reason: string;
  /** The planner's kind of wait (build-backoff, build-in-flight, no-template, …). */
  kind: Wait['kind'];
  /** When the profile will be tried again (a back-off's end). */
  retryAt?: string;
  /** When the wait ends at the latest (a back-off's end, a build's deadline). */
  until?: string;
}

export interface BuildSummary {
  /** The rebuild guest's name: `<prefix>-rebuild-<profile>@<gen>`. */
  name: string;
  profile: string;
  gen: string;
  template: string;
  status: 'running' | 'succeeded' | 'failed';
  startedAt: string;
  finishedAt?: string;
  durationMs?: number;
  elapsedSeconds?: number;
  reason?: string;
  error?: string;
}

export interface ProfileSummary {
  name: string;
  source: string;
  file: string;
  desired: { runners: number; inputsHash: string; baseVersion: string; labels: Record<string, string> };
  template: {
    name: string;
    gen: string;
    current: boolean;
    createdAt: string;
    ageSeconds: number;
    baseVersion: string;
  } | null;
  /** `busy`: runners a CI job holds now (= `ci.busy`); null without `ci:` or when the CI system cannot tell. */
  runners: { desired: number; ready: number; running: number; busy: number | null };
  /** The profile's CI system and each runner's state there, as `corral status` shows it; null without `ci:`. */
  ci: ProfileCiSummary | null;
  building: BuildSummary | null;
  lastBuild: BuildSummary | null;
  pending: PendingReason[];
  changes: number;
  backoff: BackoffEntry | null;
  rebuildRequestedAt: string | null;
}

export interface Snapshot {
  generatedAt: string;
  generation: number | null;
  hypervisor: string;
  lock: { pid: number; command: string; since: string } | null;
  problems: WatchStatus['problems'];
  lastPassAt: string | null;
  profiles: ProfileSummary[];
  unrecognized: Observation['unrecognized'];
  /** Not part of the JSON: what the snapshot was computed from, for the detail endpoints. */
  internal: { view: CompiledView | undefined; observed: Observation; plan: Plan | undefined; events: Event[] };
}

const HISTORY_EVENTS = 5000;

export async function readSnapshot(deps: ReadDeps): Promise<Snapshot> {
  const { config } = deps;
  const now = deps.clock();
  const hypervisor = await deps.hypervisor();
  const [stored, holder, events, backoff, requests, ciFacts] = await Promise.all([
    readCurrentView(config.stateDir),
    readLockHolder(config.stateDir),
    deps.events.recent(HISTORY_EVENTS),
    new BackoffStore(config.stateDir, config.backoff).read(),
    new RebuildRequests(config.stateDir).read(),
    readCiFacts(config, now),
  ]);
  const live = holder && isAlive(holder) ? holder : undefined;
  const view = stored ?? (await deps.preview?.().catch(() => undefined));
  let observed: Observation;
  let plan: Plan | undefined;
  if (view) {
    ({ observed, plan } = await observeAndPlan(view, {
      config,
      hypervisor,
      clock: deps.clock,
      ...backoffStores(config),
      rebuildRequests: new RebuildRequests(config.stateDir),
      ...(live ? { ownerToken: live.token } : {}),
    }));
  } else {
    observed = await hypervisor.observe();
  }
  const watchFile = live ? await readWatchStatus(config.stateDir) : undefined;
  const watch = watchFile?.pid === live?.pid ? watchFile : undefined;
  const profiles = (view?.profiles ?? []).map((p) =>
    summarize(p, observed.guests, {
      plan,
      events,
      backoff: backoff[p.name],
      requestedAt: requests[p.name],
      now,
      ciFacts,
    }),
  );
  return {
    generatedAt: now.toISOString(),
    generation: view?.generation ?? null,
    hypervisor: hypervisor.kind,
    lock: live ? lockInfo(live) : null,
    problems: watch?.problems ?? [],
    lastPassAt: watch?.lastPassAt ?? null,
    profiles,
    unrecognized: observed.unrecognized,
    internal: { view, observed, plan, events },
  };
}

function lockInfo(holder: LockHolder): NonNullable<Snapshot['lock']> {
  return { pid: holder.pid, command: holder.command, since: holder.startedAt };
}

function summarize(
  p: CompiledProfile,
  all: ObservedGuest[],
  ctx: {
    plan: Plan | undefined;
    events: Event[];
    backoff?: BackoffEntry;
    requestedAt?: string;
    now: Date;
    ciFacts: CiFacts;
  },
): ProfileSummary {
  const guests = all.filter((g) => g.profile === p.name);
  const templates = guests.filter((g) => g.role === 'template').sort(newestFirst);
  const liveTemplate = templates.find((t) => t.meta.inputsHash === p.inputsHash) ?? templates[0];
  const runners = guests.filter((g) => g.role === 'runner');
  const history = buildHistory(p.name, guests, ctx.events, ctx.now);
  const building = history.find((b) => b.status === 'running') ?? null;
  const lastBuild = history.find((b) => b.status !== 'running') ?? null;
  const ci = profileCiSummary(p, runners, ctx.ciFacts);
  return {
    name: p.name,
    source: p.source,
    file: p.file,
    desired: { runners: p.runners, inputsHash: p.inputsHash, baseVersion: p.baseVersion, labels: p.labels },
    template: liveTemplate
      ? {
          name: liveTemplate.name,
          gen: liveTemplate.gen ?? '',
          current: liveTemplate.meta.inputsHash === p.inputsHash,
          createdAt: createdAt(liveTemplate).toISOString(),
          ageSeconds: Math.round((ctx.now.getTime() - createdAt(liveTemplate).getTime()) / 1000),
          baseVersion: liveTemplate.meta.baseVersion,
        }
      : null,
    runners: {
      desired: p.runners,
      ready: runners.filter((r) => r.state === 'running' && r.meta.gen === liveTemplate?.gen).length,
      running: runners.filter((r) => r.state === 'running').length,
      busy: ci?.busy ?? null,
    },
    ci,
    building,
    lastBuild,
    pending: (ctx.plan?.waits ?? []).filter((w) => w.profile === p.name).map(pendingReason),
    changes: (ctx.plan?.actions ?? []).filter((a) => a.profile === p.name).length,
    backoff: ctx.backoff ?? null,
    rebuildRequestedAt: ctx.requestedAt ?? null,
  };
}

/** A wait held back by a back-off carries its end as its "retry at". */
function pendingReason(w: Wait): PendingReason {
  const backoff =
    w.kind === 'build-backoff' ||
    w.kind === 'runner-backoff' ||
    w.kind === 'publish-backoff' ||
    w.kind === 'base-unresolved';
  return {
    reason: w.reason,
    kind: w.kind,
    ...(w.until ? { until: w.until } : {}),
    ...(backoff && w.until ? { retryAt: w.until } : {}),
  };
}

/**
 * A profile's builds, newest first: the rebuild guests alive now (running or awaiting promotion)
 * and every finished build recorded in events.jsonl.
 */
export function buildHistory(profile: string, guests: ObservedGuest[], events: Event[], now: Date): BuildSummary[] {
  const builds = new Map<string, BuildSummary>();
  for (const e of events) {
    if (e.action !== 'build' || e.profile !== profile) continue;
    const gen = e.guest.split('@')[1] ?? '';
    builds.set(e.guest, {
      name: e.guest,
      profile,
      gen,
      template: e.guest.replace('-rebuild-', '-template-'),
      status: e.ok ? 'succeeded' : 'failed',
      startedAt: e.time,
      finishedAt: new Date(Date.parse(e.time) + e.durationMs).toISOString(),
      durationMs: e.durationMs,
      reason: e.reason,
      ...(e.error ? { error: e.error } : {}),
    });
  }
  for (const g of guests) {
    if (g.role !== 'rebuild' || builds.has(g.name)) continue;
    const started = createdAt(g);
    builds.set(g.name, {
      name: g.name,
      profile,
      gen: g.gen ?? '',
      template: g.name.replace('-rebuild-', '-template-'),
      status: 'running',
      startedAt: started.toISOString(),
      elapsedSeconds: Math.max(0, Math.round((now.getTime() - started.getTime()) / 1000)),
    });
  }
  return [...builds.values()].sort((a, b) => b.gen.localeCompare(a.gen) || b.startedAt.localeCompare(a.startedAt));
}

export interface TemplateInfo {
  name: string;
  profile: string;
  gen: string;
  state: string;
  createdAt: string;
  inputsHash: string;
  baseVersion: string;
  current: boolean;
  runners: string[];
}

export function templatesOf(snapshot: Snapshot, profile?: string): TemplateInfo[] {
  const { observed, view } = snapshot.internal;
  const hashes = new Map((view?.profiles ?? []).map((p) => [p.name, p.inputsHash]));
  return observed.guests
    .filter((g) => g.role === 'template' && (profile === undefined || g.profile === profile))
    .sort(newestFirst)
    .map((t) => ({
      name: t.name,
      profile: t.profile,
      gen: t.gen ?? '',
      state: t.state,
      createdAt: createdAt(t).toISOString(),
      inputsHash: t.meta.inputsHash,
      baseVersion: t.meta.baseVersion,
      current: hashes.get(t.profile) === t.meta.inputsHash,
      runners: observed.guests
        .filter((r) => r.role === 'runner' && r.profile === t.profile && r.meta.gen === t.gen)
        .map((r) => r.name),
    }));
}

export interface RunnerInfo {
  name: string;
  profile: string;
  index: number;
  state: string;
  template: string;
  createdAt: string;
  /** Whether it is a clone of the profile's current template. */
  current: boolean;
  /** The runner's state in its profile's CI system, as `corral status` shows it; null without `ci:`. */
  ci: { system: ProfileCiSummary['system']; state: string; busy: boolean } | null;
}

export function runnersOf(snapshot: Snapshot, profile?: string): RunnerInfo[] {
  const { observed, view } = snapshot.internal;
  const hashes = new Map((view?.profiles ?? []).map((p) => [p.name, p.inputsHash]));
  const ciOf = new Map<string, NonNullable<RunnerInfo['ci']>>();
  for (const p of snapshot.profiles)
    for (const r of p.ci?.runners ?? []) ciOf.set(r.name, { system: p.ci!.system, state: r.state, busy: isBusy(r) });
  return observed.guests
    .filter((g) => g.role === 'runner' && (profile === undefined || g.profile === profile))
    .sort((a, b) => a.profile.localeCompare(b.profile) || (a.index ?? 0) - (b.index ?? 0))
    .map((r) => ({
      name: r.name,
      profile: r.profile,
      index: r.index ?? 0,
      state: r.state,
      template: r.meta.gen,
      createdAt: r.meta.createdAt,
      current: hashes.get(r.profile) === r.meta.inputsHash,
      ci: ciOf.get(r.name) ?? null,
    }));
}

/** The parts of a stored build record (state/templates/<template>/manifest.json) the console normalizes. */
interface StoredManifest {
  profile?: { inputsHash?: string };
  base?: { kind?: string; url?: string; file?: string; version?: string };
  inputs?: CompiledProfile['inputs'];
}

export interface Manifest {
  /** `stored`: written when the template was built; `compiled-view`: the template's inputs equal the profile's current inputs, so they are shown from the compiled view. */
  source: 'stored' | 'compiled-view';
  template: string;
  profile: string;
  inputsHash: string;
  baseVersion: string;
  base: CompiledProfile['base'] | null;
  inputs: CompiledProfile['inputs'];
  [key: string]: unknown;
}

/**
 * The provenance of a template: the manifest stored with it when there is one
 * (`state/templates/<template>/manifest.json`), else — when the template was built from the
 * profile's current inputs — those inputs from the compiled view, which hash to the same value.
 */
export async function manifestOf(
  config: HostConfig,
  snapshot: Snapshot,
  template: string,
): Promise<Manifest | undefined> {
  const parsed = parseName(config.prefix, template);
  if (!parsed || parsed.role === 'runner') return undefined;
  const candidates = [template, `${parsed.profile}@${parsed.gen}`];
  for (const name of candidates) {
    try {
      const stored = JSON.parse(
        await readFile(join(config.stateDir, 'templates', name, 'manifest.json'), 'utf8'),
      ) as StoredManifest;
      return {
        source: 'stored',
        template: templateName(config.prefix, parsed.profile, parsed.gen),
        profile: parsed.profile,
        inputsHash: stored.profile?.inputsHash ?? '',
        baseVersion: stored.base?.version ?? '',
        base: stored.base ? ({ ...stored.base } as unknown as CompiledProfile['base']) : null,
        inputs: stored.inputs ?? [],
        // The whole build record (reason, guest, host, result, backing chain): docs/images.md.
        record: stored,
      };
    } catch {
      // not stored (yet): fall through
    }
  }
  const guest = snapshot.internal.observed.guests.find(
    (g) => g.profile === parsed.profile && g.gen === parsed.gen && g.role !== 'runner',
  );
  const profile = snapshot.internal.view?.profiles.find((p) => p.name === parsed.profile);
  if (!guest || !profile || guest.meta.inputsHash !== profile.inputsHash) return undefined;
  return {
    source: 'compiled-view',
    template: templateName(config.prefix, parsed.profile, parsed.gen),
    profile: profile.name,
    inputsHash: profile.inputsHash,
    baseVersion: profile.baseVersion,
    base: profile.base,
    inputs: profile.inputs,
  };
}

/** A build's console: the live guest's while it runs or as a template, the saved one after a failure. */
export async function buildLog(config: HostConfig, hypervisor: Hypervisor, build: string): Promise<string | undefined> {
  const live = await hypervisor.consoleLog(build);
  if (live !== undefined) return live;
  const template = build.replace('-rebuild-', '-template-');
  const asTemplate = await hypervisor.consoleLog(template);
  if (asTemplate !== undefined) return asTemplate;
  // The build record (state/templates/<template>/console.log) outlives the guest, failed or not.
  const at = build.split('@');
  for (const name of [template, `${at[0]?.replace(/^.*-rebuild-/, '')}@${at[1]}`]) {
    const kept = await readFile(join(config.stateDir, 'templates', name, 'console.log'), 'utf8').catch(() => undefined);
    if (kept !== undefined) return kept;
  }
  return readFile(join(config.stateDir, 'failed-builds', `${build}.console.log`), 'utf8').catch(() => undefined);
}
