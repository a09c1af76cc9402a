import type { Logger } from 'pino';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import { ConfigError, type Problem } from '../errors.js';
import { createHypervisor } from '../hypervisor/create.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { AbsentSource } from '../plan/types.js';
import { FileDigests } from '../sources/inputs.js';
import type { CompiledView } from '../sources/view.js';
import { BackoffStore } from '../state/backoff-store.js';
import { collectGarbage, type GcOptions, type GcReport } from '../gc/collect.js';
import { BaseCache, formatProgress } from '../images/base-cache.js';
import { DiskFloor } from '../images/floor.js';
import { BaseResolver } from '../images/resolve.js';
import { fetchText, type Progress } from '../images/transport.js';
import type { CompiledProfile } from '../sources/view.js';
import { BuildRecords } from '../state/build-records.js';
import { RunnerLogs } from '../state/runner-logs.js';
import { refreshView } from './refresh-view.js';
import type { HeldSource } from '../state/source-absence.js';
import { EventLog } from '../state/events.js';
import { RebuildRequests } from '../state/rebuild-requests.js';
import { isAlive, readLockHolder } from '../state/lock.js';
import { createRunnerCi, type RunnerCi } from '../ci/runner-ci.js';
import { CiOutageStore } from '../state/ci-outages.js';
import { ClaimStore } from '../state/claims.js';
import { DeregistrationStore } from '../state/ci-deregistrations.js';
import { dockerCredentialStore, type CredentialStore } from '../oci/credentials.js';
import { PublishStore } from '../state/published.js';
import { pullBaseImage } from '../apply/template-transfer.js';
import { RegistryClient } from '../oci/client.js';
import type { PullProgress } from '../oci/pull.js';
import { parseReference } from '../oci/reference.js';

/** The long-lived things a pass works with, made once per process. */
export interface Runtime {
  hypervisor: Hypervisor;
  events: EventLog;
  /** Back-off after failed builds. */
  backoff: BackoffStore;
  /** Back-off after crashed runners. */
  runnerBackoff: BackoffStore;
  /** The images side (docs/images.md); openRuntime always makes it, unit-test worlds may leave it out. */
  bases?: BaseCache;
  /** Build manifests and console logs. */
  records?: BuildRecords;
  /** Console logs of destroyed runners. */
  runnerLogs?: RunnerLogs;
  /** Resolves checksum-listed base versions before every plan. */
  resolver?: BaseResolver;
  /** The imagesDir free-space floor. */
  floor?: DiskFloor;
  /** End-of-pass garbage collection (passes call it with the profiles as they resolved them). */
  collect?: (
    profiles: CompiledProfile[],
    inFlight: ReadonlySet<string> | undefined,
    changed: boolean,
  ) => Promise<GcReport | undefined>;
  /** `--keep-failed`: failed rebuilds are set aside, not destroyed. */
  keepFailed?: boolean;
  /** Rebuilds asked for through the console (optional: a bare runtime in tests plans without them). */
  rebuildRequests?: RebuildRequests;
  clock: () => Date;
  sleep: (ms: number) => Promise<void>;
  /** How often running builds are looked at. */
  pollMs: number;
  ci: RunnerCi;
  ciOutages: CiOutageStore;
  /** Failed hook deregistrations, retried with back-off. */
  deregistrations?: DeregistrationStore;
  claims: ClaimStore;
  /** Registry credentials (the docker config file) for profiles that follow or publish. */
  credentials?: CredentialStore;
  /** What publishing profiles last pushed, and the back-off of failed pushes. */
  publishes?: PublishStore;
}

/** What openRuntime makes: every part of a Runtime, and on-demand garbage collection. */
export interface FullRuntime extends Runtime {
  bases: BaseCache;
  records: BuildRecords;
  resolver: BaseResolver;
  floor: DiskFloor;
  /** On-demand garbage collection (`corral gc`), over the given profiles or those of the last pass. */
  gc: (opts: GcOptions, inFlight?: ReadonlySet<string>, profiles?: readonly CompiledProfile[]) => Promise<GcReport>;
}

export interface RuntimeContext {
  config: HostConfig;
  log: Logger;
  now: () => Date;
  env: NodeJS.ProcessEnv;
}

const COLLECT_IDLE_MS = 600_000;

export interface RuntimeOptions {
  /**
   * For `plan`, `status`, `inspect`, `history`, `logs`: the backend is looked at, never changed
   * (nor its saved state), and resolving bases records nothing.
   */
  readOnly?: boolean;
  /** `--keep-failed`: failed rebuilds are set aside, not destroyed. */
  keepFailed?: boolean;
  /** `reconcile` and `watch`: they hold the state-dir lock and so connect to guests' channels. */
  holdsLock?: boolean;
}

export async function openRuntime(ctx: RuntimeContext, opts: RuntimeOptions = {}): Promise<FullRuntime> {
  const { config } = ctx;
  const hypervisor = await createHypervisor(config, {
    log: ctx.log,
    clock: ctx.now,
    env: ctx.env,
    ...(opts.readOnly ? { readOnly: true } : {}),
    attachChannels: opts.holdsLock === true,
  });
  const records = new BuildRecords(config.stateDir);
  let lastProfiles: readonly CompiledProfile[] = [];
  let lastCollectAt = -Infinity;
  const credentials = dockerCredentialStore(ctx.env);
  const bases: BaseCache = new BaseCache({
    imagesDir: config.imagesDir,
    run: async (file, args) => {
      const { execaExec } = await import('../exec/exec.js');
      return execaExec(file, args);
    },
    clock: ctx.now,
    onProgress: progressReporter(ctx.log),
    // The floor is made below; the closure runs only once a download begins.
    beforeFetch: (): Promise<void> => floor.check('download a base image'),
    pullOci: (ref, version) =>
      pullBaseImage({ credentials, imagesDir: config.imagesDir, log: ctx.log }, ref, version, {
        concurrency: 4,
        onProgress: pullReporter(ctx.log, ref),
      }),
  });
  const gc = (
    gcOpts: GcOptions,
    inFlight?: ReadonlySet<string>,
    profiles?: readonly CompiledProfile[],
  ): Promise<GcReport> =>
    collectGarbage(
      {
        hypervisor,
        bases,
        records,
        stateDir: config.stateDir,
        prefix: config.prefix,
        settings: config.gc,
        clock: ctx.now,
        log: ctx.log,
        profiles: () => profiles ?? lastProfiles,
        ...(inFlight ? { inFlight } : {}),
      },
      gcOpts,
    );
  // Beside clone work of the same pass: files younger than ten minutes may be on their way in.
  const floor: DiskFloor = new DiskFloor({
    dir: config.imagesDir,
    minFreeBytes: config.minFreeBytes,
    collect: () => gc({ graceMs: 600_000 }),
  });
  return {
    hypervisor,
    events: new EventLog(config.stateDir),
    ...backoffStores(config),
    bases,
    records,
    runnerLogs: new RunnerLogs(config.stateDir),
    resolver: new BaseResolver({
      stateDir: config.stateDir,
      fetchText,
      // One HEAD, few retries: an unreachable registry is a wait (base-unresolved), not a stall of the pass.
      resolveOci: (ref) => {
        const r = parseReference(ref);
        return new RegistryClient(r.registry, { credentials, retries: 1, retryDelayMs: 200 }).resolve(
          r.repository,
          r.tag ?? 'latest',
        );
      },
      clock: ctx.now,
      record: opts.readOnly !== true,
    }),
    floor,
    collect: async (profiles, inFlight, changed) => {
      lastProfiles = profiles;
      // A steady-state pass costs one virsh process; collecting costs three more. After a pass
      // that changed nothing there is rarely anything new to collect: every ten minutes is enough.
      const now = ctx.now().getTime();
      if (!changed && now - lastCollectAt < COLLECT_IDLE_MS) return undefined;
      lastCollectAt = now;
      return gc({}, inFlight);
    },
    gc,
    keepFailed: opts.keepFailed === true,
    rebuildRequests: new RebuildRequests(config.stateDir),
    clock: ctx.now,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    pollMs: config.hypervisor === 'memory' ? 10 : 1000,
    ci: createRunnerCi({ host: config.ci.host, log: ctx.log, clock: ctx.now, env: ctx.env }),
    ciOutages: new CiOutageStore(config.stateDir, config.ci.backoff),
    deregistrations: new DeregistrationStore(config.stateDir, config.ci.backoff),
    claims: new ClaimStore(config.stateDir),
    credentials,
    publishes: new PublishStore(config.stateDir),
  };
}

/** Download progress: one rewritten line on a terminal, a log line every 10% otherwise. */
function progressReporter(log: Logger): (p: Progress) => void {
  const tty = Boolean(process.stderr.isTTY);
  let lastDecile = -1;
  let lastDraw = 0;
  return (p) => {
    const done = p.total !== undefined && p.received >= p.total;
    if (tty) {
      const now = Date.now();
      if (now - lastDraw < 200 && !done) return;
      lastDraw = now;
      process.stderr.write(`\r\x1b[Kdownloading ${p.url}: ${formatProgress(p)}${done ? '\n' : ''}`);
      return;
    }
    const decile = p.total ? Math.floor((p.received / p.total) * 10) : -1;
    if (decile === lastDecile) return;
    lastDecile = decile;
    log.info({ url: p.url, received: p.received, total: p.total }, `downloading: ${formatProgress(p)}`);
  };
}

/** A base image pull's progress: a log line every 10% of its chunks. */
function pullReporter(log: Logger, ref: string): (p: PullProgress) => void {
  let lastDecile = -1;
  return (p) => {
    const decile = p.chunksTotal ? Math.floor((p.chunksDone / p.chunksTotal) * 10) : 10;
    if (decile === lastDecile) return;
    lastDecile = decile;
    log.info(
      { reference: ref, chunks: p.chunksDone, of: p.chunksTotal, downloadedBytes: p.bytesDownloaded },
      `pulling base image: ${p.chunksDone}/${p.chunksTotal} chunks`,
    );
  };
}

/** The back-off stores as the host config sets them (`watch` makes them again on reload). */
export function backoffStores(config: HostConfig): Pick<Runtime, 'backoff' | 'runnerBackoff'> {
  return {
    backoff: new BackoffStore(config.stateDir, config.backoff),
    runnerBackoff: new BackoffStore(config.stateDir, config.backoff, 'runner-backoff.json'),
  };
}

/**
 * The view read-only commands show: the sources compiled now (so `plan` previews an edit before
 * any reconcile), with the stored generation number when it is the same view — or the stored view,
 * when a source it has profiles from is missing and within its grace. Writes nothing.
 */
export async function previewView(ctx: {
  config: HostConfig;
  validators: Validators;
  now: () => Date;
  warn: (problem: Problem) => void;
}): Promise<{ view: CompiledView; generation: number | null; held: HeldSource[] }> {
  const refreshed = await refreshView(ctx.config, {
    validators: ctx.validators,
    digests: new FileDigests(),
    now: ctx.now(),
    readOnly: true,
  });
  if (!refreshed.ok || !refreshed.view) throw new ConfigError('the sources do not compile', refreshed.problems);
  for (const p of refreshed.problems) if (!isHeldLine(p)) ctx.warn(p);
  const generation = refreshed.accepted && refreshed.changed ? null : refreshed.view.generation;
  return { view: refreshed.view, generation, held: refreshed.absence.holding };
}

/** Held sources are shown by the command itself (as "kept:" lines), not as a warning. */
function isHeldLine(p: Problem): boolean {
  return p.severity === 'warning' && p.message.startsWith('kept: source ');
}

/** Held sources as the planner takes them: each wakes the watch (or says when to look) at its grace end. */
export function absentSourcesOf(held: readonly HeldSource[]): AbsentSource[] {
  return held.map((h) => ({ dir: h.dir, until: h.graceUntil.toISOString() }));
}

/** The token of a live lock holder: its rebuilds are in flight, not orphans. */
export async function liveOwnerToken(stateDir: string): Promise<string | undefined> {
  const holder = await readLockHolder(stateDir);
  return holder && isAlive(holder) ? holder.token : undefined;
}
