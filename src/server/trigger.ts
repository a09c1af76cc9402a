import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { buildsDone } from '../apply/apply.js';
import { runPass } from '../reconcile/pass.js';
import type { Runtime } from '../reconcile/runtime.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import { LockBusyError } from '../errors.js';
import { FileDigests } from '../sources/inputs.js';
import { acquireLock, isAlive, readLockHolder } from '../state/lock.js';
import { refreshView } from '../reconcile/refresh-view.js';
import type { FeedEvent } from './feed.js';

export interface Triggered {
  /** Who runs the pass: this process, or the lock holder that was signalled. */
  via: string;
}

/** How the server gets a pass run. Throws LockBusyError when nobody can run one now. */
export interface PassTrigger {
  reconcile(why: string): Promise<Triggered>;
  /** The hypervisor of the passes this process is running now, if any: reads use it then. */
  current(): Hypervisor | undefined;
  stop(): Promise<void>;
}

/** `watch --serve`: the daemon in this process runs the pass. */
export function daemonTrigger(requestPass: () => void): PassTrigger {
  return {
    current: () => undefined,
    reconcile: async () => {
      requestPass();
      return { via: 'this watch' };
    },
    stop: async () => undefined,
  };
}

export interface LockingTriggerDeps {
  config: HostConfig;
  validators: Validators;
  log: Logger;
  /** A fresh runtime per run of passes, so a memory backend starts from what is on disk now. */
  openRuntime(): Promise<Runtime>;
  publish(event: FeedEvent): void;
  /** Has the live feed look at the guests now (before a pass acts, so what it acts on is published first). */
  look?(): Promise<void>;
  /** Sends SIGHUP to a `watch` holding the lock (it reloads and runs a pass); injectable for tests. */
  signal?: (pid: number) => void;
}

/**
 * `corral serve` without `watch`: a pass asked for through the API runs in this process, holding
 * the state-dir lock for as long as it and the builds it started take (exactly like
 * `reconcile --once`), and releases it after, so cron keeps working. When a `watch` on this host
 * holds the lock, it is sent SIGHUP, which makes it run a pass; any other holder (a
 * `reconcile --once` in progress) makes the request fail with 409, except that rebuild requests
 * are recorded in the state dir first and so are picked up by the holder's next pass anyway.
 */
export function lockingTrigger(deps: LockingTriggerDeps): PassTrigger {
  let running: Promise<void> | undefined;
  let runtime: Runtime | undefined;
  let again = false;
  let resolveStop: () => void = () => undefined;
  const stopping = new Promise<void>((resolve) => (resolveStop = resolve));
  const signal = deps.signal ?? ((pid: number) => process.kill(pid, 'SIGHUP'));

  const converge = async (lock: Awaited<ReturnType<typeof acquireLock>>, why: string): Promise<void> => {
    const { config, log } = deps;
    try {
      runtime = await deps.openRuntime();
      for (let passes = 0; passes < 20; passes++) {
        const refreshed = await refreshView(config, {
          validators: deps.validators,
          digests: new FileDigests(),
          now: runtime.clock(),
        });
        if (!refreshed.view) {
          log.warn('no view has compiled yet: nothing to reconcile until the sources compile');
          return;
        }
        await deps.look?.();
        const started = runtime.clock();
        deps.publish({ type: 'pass', phase: 'start', at: started.toISOString(), by: 'serve', triggers: [why] });
        const pass = await runPass(refreshed.view, {
          ...runtime,
          config,
          log,
          ownerToken: lock.holder.token,
          stopping,
        });
        const counts: Record<string, number> = {};
        for (const a of pass.plan.actions) counts[a.action] = (counts[a.action] ?? 0) + 1;
        deps.publish({
          type: 'pass',
          phase: 'done',
          at: runtime.clock().toISOString(),
          by: 'serve',
          triggers: [why],
          durationMs: runtime.clock().getTime() - started.getTime(),
          actions: counts,
          failed: pass.results.filter((r) => !r.ok).length,
        });
        const results = pass.results.concat(await buildsDone(pass.builds));
        if (again) {
          again = false;
          continue;
        }
        if (pass.plan.actions.length === 0 || !results.some((r) => r.ok)) return;
      }
    } finally {
      // Only the lock holder reads guests' channels: let the next holder connect.
      await runtime?.hypervisor.releaseChannels?.().catch(() => undefined);
      runtime = undefined;
      await lock.release();
    }
  };

  return {
    current: () => runtime?.hypervisor,
    async reconcile(why) {
      if (running) {
        again = true;
        return { via: 'this serve (after the pass it is running)' };
      }
      let lock: Awaited<ReturnType<typeof acquireLock>>;
      try {
        lock = await acquireLock(deps.config.stateDir, { command: 'serve', log: deps.log });
      } catch (error) {
        if (!(error instanceof LockBusyError)) throw error;
        const holder = await readLockHolder(deps.config.stateDir);
        if (holder && isAlive(holder) && holder.command === 'watch' && holder.host === hostname()) {
          signal(holder.pid);
          return { via: `watch (pid ${holder.pid}), signalled with SIGHUP` };
        }
        throw error;
      }
      running = converge(lock, why)
        .catch((error: unknown) => deps.log.error({ error: (error as Error).message }, 'pass failed'))
        .finally(() => (running = undefined));
      return { via: 'this serve' };
    },
    async stop() {
      resolveStop();
      await running;
    },
  };
}
