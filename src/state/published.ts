/**
 * `publish: {oci}` bookkeeping (docs/oci-format.md, "Profiles that use a registry"):
 * `state/published.json` says what each profile last pushed and where, and
 * `state/publish-backoff.json` how long a failing push waits before it is tried again. The planner
 * reads both as facts, so a push that failed stays a pending action until one succeeds.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackoffEntry, Published } from '../plan/types.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { BackoffStore } from './backoff-store.js';

/** A registry that fails a push is tried again after 15 s, doubling, at most every 10 minutes. */
export const PUBLISH_RETRY = { initialSeconds: 15, maxSeconds: 600 } as const;

export class PublishStore {
  private readonly file: string;
  private readonly backoff: BackoffStore;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(stateDir: string) {
    this.file = join(stateDir, 'published.json');
    this.backoff = new BackoffStore(stateDir, PUBLISH_RETRY, 'publish-backoff.json');
  }

  async read(): Promise<Record<string, Published>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, Published>;
    } catch {
      return {};
    }
  }

  readBackoff(): Promise<Record<string, BackoffEntry>> {
    return this.backoff.read();
  }

  async recordSuccess(profile: string, published: Published): Promise<void> {
    const next = this.chain.then(async () => {
      const all = await this.read();
      all[profile] = published;
      await writeFileAtomic(this.file, `${JSON.stringify(all, null, 2)}\n`);
    });
    this.chain = next.catch(() => undefined);
    await next;
    await this.backoff.recordSuccess(profile);
  }

  recordFailure(profile: string, error: string, now: Date): Promise<BackoffEntry> {
    return this.backoff.recordFailure(profile, error, now);
  }
}
