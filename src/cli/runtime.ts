import { ConfigError, formatProblem } from '../errors.js';
import { createHypervisor } from '../hypervisor/create.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import { FileDigests } from '../sources/inputs.js';
import type { CompiledView } from '../sources/view.js';
import { compileSources } from '../sources/compile.js';
import { BackoffStore } from '../state/backoff-store.js';
import { FailedBuildLogs } from '../state/build-logs.js';
import { readCurrentView } from '../state/compiled-store.js';
import { EventLog } from '../state/events.js';
import { isAlive, readLockHolder } from '../state/lock.js';
import type { CommandContext } from './command.js';

export interface Runtime {
  hypervisor: Hypervisor;
  events: EventLog;
  backoff: BackoffStore;
  failedLogs: FailedBuildLogs;
  clock: () => Date;
  sleep: (ms: number) => Promise<void>;
  /** How often running builds are looked at. */
  pollMs: number;
}

export async function openRuntime(ctx: CommandContext): Promise<Runtime> {
  const { config } = ctx;
  return {
    hypervisor: await createHypervisor(config, { log: ctx.log, clock: ctx.now, env: ctx.env }),
    events: new EventLog(config.stateDir),
    backoff: new BackoffStore(config.stateDir, config.backoff),
    failedLogs: new FailedBuildLogs(config.stateDir),
    clock: ctx.now,
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    pollMs: config.hypervisor === 'memory' ? 10 : 1000,
  };
}

/**
 * The view read-only commands show: the sources compiled now (so `plan` previews an edit before
 * any reconcile), with the stored generation number when it is the same view.
 */
export async function previewView(ctx: CommandContext): Promise<{ view: CompiledView; generation: number | null }> {
  const compilation = await compileSources(ctx.config.sources, {
    validators: ctx.validators,
    digests: new FileDigests(),
  });
  if (!compilation.ok || !compilation.view) throw new ConfigError('the sources do not compile', compilation.problems);
  for (const p of compilation.problems) ctx.io.err(`warning: ${formatProblem(p)}\n`);
  const current = await readCurrentView(ctx.config.stateDir);
  const generation = current?.hash === compilation.view.hash ? current.generation : null;
  return {
    view: { ...compilation.view, generation: generation ?? 0, compiledAt: ctx.now().toISOString() },
    generation,
  };
}

/** The token of a live lock holder: its rebuilds are in flight, not orphans. */
export async function liveOwnerToken(stateDir: string): Promise<string | undefined> {
  const holder = await readLockHolder(stateDir);
  return holder && isAlive(holder) ? holder.token : undefined;
}
