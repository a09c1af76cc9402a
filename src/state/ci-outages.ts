import { join } from 'node:path';
import type { CiOutage } from '../plan/types.js';
import { backoffSeconds, RecordFile } from './record-file.js';

/**
 * Per-profile back-off after a CI system failed (GitHub down, a hook failing), persisted so cron
 * runs and `status` see it. Only runner creation waits; everything else goes on.
 */
export class CiOutageStore {
  private readonly records: RecordFile<CiOutage>;

  constructor(
    stateDir: string,
    private readonly policy: { initialSeconds: number; maxSeconds: number },
  ) {
    this.records = new RecordFile(join(stateDir, 'ci-outages.json'));
  }

  read(): Promise<Record<string, CiOutage>> {
    return this.records.read();
  }

  /** The next try is the later of the server's retry-after and our own exponential back-off. */
  recordFailure(
    profile: string,
    failure: { system: string; summary: string; retryAt?: Date | undefined },
    now: Date,
  ): Promise<CiOutage> {
    return this.records.update((all) => {
      const previous = all[profile];
      const failures = (previous?.failures ?? 0) + 1;
      const delay = backoffSeconds(this.policy, failures);
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

  recordSuccess(profile: string): Promise<void> {
    return this.records.remove(profile);
  }
}
