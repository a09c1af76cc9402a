/**
 * A JSON object of records by key (profile or runner) in one state file: read whole, changed
 * through one serialized read-modify-write at a time in this process (only the lock holder
 * writes), replaced atomically. The back-off stores, CI outages, pending deregistrations and
 * publish records are each one of these.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../util/atomic-write.js';

/** Returned by a change that changed nothing: the file is not rewritten. */
export const NO_CHANGE = Symbol('no change');

export class RecordFile<T> {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly file: string) {}

  /** Every record; a missing or unreadable file is none (what it held is rebuilt by the next failure). */
  async read(): Promise<Record<string, T>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, T>;
    } catch {
      return {};
    }
  }

  update<R>(change: (all: Record<string, T>) => R): Promise<R> {
    const next = this.chain.then(async () => {
      const all = await this.read();
      const result = change(all);
      if (result !== NO_CHANGE) await writeFileAtomic(this.file, `${JSON.stringify(all, null, 2)}\n`);
      return result;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Removes one record; the file is not touched when there was none. */
  async remove(key: string): Promise<void> {
    await this.update((all) => {
      if (!(key in all)) return NO_CHANGE;
      delete all[key];
      return undefined;
    });
  }
}

/** Exponential back-off: `initialSeconds` after the first failure, doubling, at most `maxSeconds`. */
export function backoffSeconds(policy: { initialSeconds: number; maxSeconds: number }, failures: number): number {
  return Math.min(policy.maxSeconds, policy.initialSeconds * 2 ** (failures - 1));
}
