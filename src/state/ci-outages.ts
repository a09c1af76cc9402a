import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CiOutage } from '../plan/types.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/**
 * Per-profile back-off after a CI system failed (GitHub down, a hook failing), persisted so cron
 * runs and `status` see it. Only runner creation waits; everything else goes on.
 */
export class CiOutageStore {
  private readonly file: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly policy: { initialSeconds: number; maxSeconds: number },
  ) {
    this.file = join(stateDir, 'ci-outages.json');
  }

  async read(): Promise<Record<string, CiOutage>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, CiOutage>;
    } catch {
      return {};
    }
  }

  /** The next try is the later of the server's retry-after and our own exponential back-off. */
  recordFailure(
    profile: string,
    failure: { system: string; summary: string; retryAt?: Date | undefined },
    now: Date,
  ): Promise<CiOutage> {
    return this.update((all) => {
      const previous = all[profile];
      const failures = (previous?.failures ?? 0) + 1;
      const delay = Math.min(this.policy.maxSeconds, this.policy.initialSeconds * 2 ** (failures - 1));
      const ours = now.getTime() + delay * 1000;
      const retryAt = new Date(Math.max(ours, failure.retryAt?.getTime() ?? 0)).toISOString();
      const entry: CiOutage = {
        system: failure.system,
        summary: failure.summary,
        since: previous?.since ?? now.toISOString(),
        retryAt,
        failures,
      };
      all[profile] = entry;
      return entry;
    });
  }

  async recordSuccess(profile: string): Promise<void> {
    if (!(profile in (await this.read()))) return;
    await this.update((all) => {
      delete all[profile];
    });
  }

  private update<T>(change: (all: Record<string, CiOutage>) => T): Promise<T> {
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
