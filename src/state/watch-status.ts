import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Problem } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/** What a running `corral watch` tells `corral status`: the problems it is living with. */
export interface WatchStatus {
  pid: number;
  updatedAt: string;
  /** Generation being reconciled (the last good one when the sources are broken). */
  generation?: number;
  problems: Problem[];
  /** Source dirs gone, and since when (their profiles stay until the grace period ends). */
  absentSince: Record<string, string>;
  lastPassAt?: string;
}

export function watchStatusPath(stateDir: string): string {
  return join(stateDir, 'watch-status.json');
}

export async function writeWatchStatus(stateDir: string, status: WatchStatus): Promise<void> {
  await writeFileAtomic(watchStatusPath(stateDir), `${JSON.stringify(status, null, 2)}\n`);
}

export async function readWatchStatus(stateDir: string): Promise<WatchStatus | undefined> {
  try {
    return JSON.parse(await readFile(watchStatusPath(stateDir), 'utf8')) as WatchStatus;
  } catch {
    return undefined;
  }
}
