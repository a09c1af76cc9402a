/**
 * `publish: {oci}` bookkeeping (docs/oci-format.md, "Profiles that use a registry"):
 * `state/published.json` says what each profile last pushed and where, and
 * `state/publish-backoff.json` how long a failing push waits before it is tried again. The planner
 * reads both as facts, so a push that failed stays a pending action until one succeeds.
 */
import { join } from 'node:path';
import type { BackoffEntry, Published } from '../plan/types.js';
import { RecordFile } from './record-file.js';
import { BackoffStore } from './backoff-store.js';

/** A registry that fails a push is tried again after 15 s, doubling, at most every 10 minutes. */
export const PUBLISH_RETRY = { initialSeconds: 15, maxSeconds: 600 } as const;

export class PublishStore {
  private readonly records: RecordFile<Published>;
  private readonly backoff: BackoffStore;

  constructor(stateDir: string) {
    this.records = new RecordFile(join(stateDir, 'published.json'));
    this.backoff = new BackoffStore(stateDir, PUBLISH_RETRY, 'publish-backoff.json');
  }

  read(): Promise<Record<string, Published>> {
    return this.records.read();
  }

  readBackoff(): Promise<Record<string, BackoffEntry>> {
    return this.backoff.read();
  }

  async recordSuccess(profile: string, published: Published): Promise<void> {
    await this.records.update((all) => {
      all[profile] = published;
    });
    await this.backoff.recordSuccess(profile);
  }

  recordFailure(profile: string, error: string, now: Date): Promise<BackoffEntry> {
    return this.backoff.recordFailure(profile, error, now);
  }
}
