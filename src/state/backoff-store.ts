import { join } from 'node:path';
import type { BackoffEntry } from '../plan/types.js';
import { backoffSeconds, RecordFile } from './record-file.js';

/**
 * Per-profile back-off (after failed builds in `backoff.json`, after crashed runners in
 * `runner-backoff.json`), persisted so that cron runs honour it too.
 * Updates are serialized in-process; only the lock holder writes.
 */
export class BackoffStore {
  private readonly records: RecordFile<BackoffEntry>;

  constructor(
    stateDir: string,
    private readonly policy: { initialSeconds: number; maxSeconds: number },
    fileName = 'backoff.json',
  ) {
    this.records = new RecordFile(join(stateDir, fileName));
  }

  read(): Promise<Record<string, BackoffEntry>> {
    return this.records.read();
  }

  /** `kind: 'host'`: the host, not the guest, failed (HostError); said so wherever the back-off is shown. */
  recordFailure(profile: string, error: string, now: Date, kind: 'build' | 'host' = 'build'): Promise<BackoffEntry> {
    return this.records.update((all) => {
      const failures = (all[profile]?.failures ?? 0) + 1;
      const delay = backoffSeconds(this.policy, failures);
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
    return this.records.remove(profile);
  }
}
