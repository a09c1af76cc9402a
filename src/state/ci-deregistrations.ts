import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PendingDeregistration } from '../plan/types.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/**
 * Deregistrations that failed (a `ci.hook.deregister` that exited non-zero or timed out), per
 * runner, persisted in `state/ci-deregistrations.json` so that cron runs, `watch` and `status`
 * see them: each is retried after an exponential back-off (the host config's ci.backoffInitial /
 * ci.backoffMax) until it succeeds. A runner name with a deregistration pending is not
 * registered again before that deregistration went through.
 */
export class DeregistrationStore {
  private readonly file: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly policy: { initialSeconds: number; maxSeconds: number },
  ) {
    this.file = join(stateDir, 'ci-deregistrations.json');
  }

  async read(): Promise<Record<string, PendingDeregistration>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, PendingDeregistration>;
    } catch {
      return {};
    }
  }

  recordFailure(
    runner: string,
    failure: { profile: string; system: string; error: string },
    now: Date,
  ): Promise<PendingDeregistration> {
    return this.update((all) => {
      const previous = all[runner];
      const failures = (previous?.failures ?? 0) + 1;
      const delay = Math.min(this.policy.maxSeconds, this.policy.initialSeconds * 2 ** (failures - 1));
      const entry: PendingDeregistration = {
        profile: failure.profile,
        system: failure.system,
        since: previous?.since ?? now.toISOString(),
        retryAt: new Date(now.getTime() + delay * 1000).toISOString(),
        failures,
        lastError: failure.error,
      };
      all[runner] = entry;
      return entry;
    });
  }

  async recordSuccess(runner: string): Promise<void> {
    if (!(runner in (await this.read()))) return;
    await this.update((all) => {
      delete all[runner];
    });
  }

  private update<T>(change: (all: Record<string, PendingDeregistration>) => T): Promise<T> {
    const next = this.chain.then(async () => {
      const all = await this.read();
      const result = change(all);
      await writeFileAtomic(this.file, `${JSON.stringify(all, null, 2)}\n`);
      return result;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
