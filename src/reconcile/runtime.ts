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
import { FailedBuildLogs } from '../state/build-logs.js';
import { refreshView } from './refresh-view.js';
import type { HeldSource } from '../state/source-absence.js';
import { EventLog } from '../state/events.js';
import { isAlive, readLockHolder } from '../state/lock.js';

/** The long-lived things a pass works with, made once per process. */
export interface Runtime {
  hypervisor: Hypervisor;
  events: EventLog;
  /** Back-off after failed builds. */
  backoff: BackoffStore;
  /** Back-off after crashed runners. */
  runnerBackoff: BackoffStore;
  failedLogs: FailedBuildLogs;
  clock: () => Date;
  sleep: (ms: number) => Promise<void>;
  /** How often running builds are looked at. */
  pollMs: number;
}

export interface RuntimeContext {
  config: HostConfig;
  log: Logger;
  now: () => Date;
  env: NodeJS.ProcessEnv;
}

/** `readOnly` for `plan` and `status`: the backend is looked at, never changed (nor its saved state). */
export async function openRuntime(ctx: RuntimeContext, opts: { readOnly?: boolean } = {}): Promise<Runtime> {
  const { config } = ctx;
  return {
    hypervisor: await createHypervisor(config, { log: ctx.log, clock: ctx.now, env: ctx.env, ...opts }),
    events: new EventLog(config.stateDir),
    ...backoffStores(config),
    failedLogs: new FailedBuildLogs(config.stateDir),
    clock: ctx.now,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    pollMs: config.hypervisor === 'memory' ? 10 : 1000,
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
