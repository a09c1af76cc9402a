import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackoffEntry } from '../plan/types.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/** Returned by a change that changed nothing: the file is not rewritten. */
const NO_CHANGE = Symbol('no change');

/**
 * Per-profile back-off (after failed builds in `backoff.json`, after crashed runners in
 * `runner-backoff.json`), persisted so that cron runs honour it too.
 * Updates are serialized in-process; only the lock holder writes.
 */
export class BackoffStore {
  private readonly file: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly policy: { initialSeconds: number; maxSeconds: number },
    fileName = 'backoff.json',
  ) {
    this.file = join(stateDir, fileName);
  }

  async read(): Promise<Record<string, BackoffEntry>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, BackoffEntry>;
    } catch {
      return {};
    }
  }

  /** `kind: 'host'`: the host, not the guest, failed (HostError); said so wherever the back-off is shown. */
  recordFailure(profile: string, error: string, now: Date, kind: 'build' | 'host' = 'build'): Promise<BackoffEntry> {
    return this.update((all) => {
      const failures = (all[profile]?.failures ?? 0) + 1;
      const delay = Math.min(this.policy.maxSeconds, this.policy.initialSeconds * 2 ** (failures - 1));
      const entry: BackoffEntry = {
        failures,
        until: new Date(now.getTime() + delay * 1000).toISOString(),
        lastError: error,
        failedAt: now.toISOString(),
        ...(kind === 'host' ? { host: true as const } : {}),
      };
      all[profile] = entry;
      return entry;
    });
  }

  recordSuccess(profile: string): Promise<void> {
    return this.update((all) => {
      if (!(profile in all)) return NO_CHANGE;
      delete all[profile];
      return undefined;
    }).then(() => undefined);
  }

  private update<T>(change: (all: Record<string, BackoffEntry>) => T): Promise<T> {
    const next = this.chain.then(async () => {
      const all = await this.read();
      const result = change(all);
      if (result !== NO_CHANGE) await writeFileAtomic(this.file, `${JSON.stringify(all, null, 2)}\n`);
      return result;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
