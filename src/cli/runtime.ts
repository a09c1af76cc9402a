import { ConfigError, formatProblem, type Problem } from '../errors.js';
import { createHypervisor } from '../hypervisor/create.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import { FileDigests } from '../sources/inputs.js';
import type { CompiledView } from '../sources/view.js';
import { BackoffStore } from '../state/backoff-store.js';
import { FailedBuildLogs, RunnerLogs } from '../state/build-logs.js';
import { refreshView } from '../state/refresh-view.js';
import type { HeldSource } from '../state/source-absence.js';
import { EventLog } from '../state/events.js';
import { isAlive, readLockHolder } from '../state/lock.js';
import type { CommandContext } from './command.js';

export interface Runtime {
  hypervisor: Hypervisor;
  events: EventLog;
  backoff: BackoffStore;
  failedLogs: FailedBuildLogs;
  runnerLogs: RunnerLogs;
  clock: () => Date;
  sleep: (ms: number) => Promise<void>;
  /** How often running builds are looked at. */
  pollMs: number;
}

/**
 * `readOnly` for `plan` and `status`: the backend is looked at, never changed (nor its saved state).
 * `holdsLock` for `reconcile` and `watch`: they hold the state-dir lock and so read guests' channels.
 */
export async function openRuntime(
  ctx: CommandContext,
  opts: { readOnly?: boolean; holdsLock?: boolean } = {},
): Promise<Runtime> {
  const { config } = ctx;
  return {
    hypervisor: await createHypervisor(config, {
      log: ctx.log,
      clock: ctx.now,
      env: ctx.env,
      ...(opts.readOnly ? { readOnly: true } : {}),
      attachChannels: opts.holdsLock === true,
    }),
    events: new EventLog(config.stateDir),
    backoff: new BackoffStore(config.stateDir, config.backoff),
    failedLogs: new FailedBuildLogs(config.stateDir),
    runnerLogs: new RunnerLogs(config.stateDir),
    clock: ctx.now,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    pollMs: config.hypervisor === 'memory' ? 10 : 1000,
  };
}

/**
 * The view read-only commands show: the sources compiled now (so `plan` previews an edit before
 * any reconcile), with the stored generation number when it is the same view — or the stored view,
 * when a source it has profiles from is missing and within its grace. Writes nothing.
 */
export async function previewView(
  ctx: CommandContext,
): Promise<{ view: CompiledView; generation: number | null; held: HeldSource[] }> {
  const refreshed = await refreshView(ctx.config, {
    validators: ctx.validators,
    digests: new FileDigests(),
    now: ctx.now(),
    readOnly: true,
  });
  if (!refreshed.ok || !refreshed.view) throw new ConfigError('the sources do not compile', refreshed.problems);
  for (const p of refreshed.problems) if (!isHeldLine(p)) ctx.io.err(`warning: ${formatProblem(p)}\n`);
  const generation = refreshed.accepted && refreshed.changed ? null : refreshed.view.generation;
  return { view: refreshed.view, generation, held: refreshed.absence.holding };
}

/** Held sources are shown by the command itself (as "kept:" lines), not as a warning. */
function isHeldLine(p: Problem): boolean {
  return p.severity === 'warning' && p.message.startsWith('kept: source ');
}

/** The token of a live lock holder: its rebuilds are in flight, not orphans. */
export async function liveOwnerToken(stateDir: string): Promise<string | undefined> {
  const holder = await readLockHolder(stateDir);
  return holder && isAlive(holder) ? holder.token : undefined;
}
