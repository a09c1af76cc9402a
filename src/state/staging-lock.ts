/**
 * One lock per pull staging dir (`<imagesDir>/staging/<manifest hex>/lock`, the same lock file as
 * the state dir's: pid, process start, token). A pull holds it from before its first write until
 * its files have landed, whoever runs it (a pass, `corral pull` by hand, a base fetch), so:
 * - two pulls of one image never write the same staging files (the second fails, transiently);
 * - garbage collection (src/gc/staging.ts) tells a staging dir in use from an abandoned one by
 *   its lock alone, never by guessing from ages, and takes the lock itself before removing one.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { stagingDir } from '../images/base-cache.js';
import pino, { type Logger } from 'pino';
import { acquireLock, isAlive, lockPath, readLockHolder, type Lock, type LockHolder } from './lock.js';

/** `command` says who holds it (`pull <reference>`, `gc`), for the busy message and `status`. */
export async function lockStaging(dir: string, command: string, log?: Logger): Promise<Lock> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await acquireLock(dir, {
        command,
        log: log ?? pino({ level: 'silent' }),
        label: `the staging dir ${dir} (another pull of the same image is under way)`,
      });
    } catch (error) {
      // Garbage collection removed an abandoned dir of the same image just now: make it again.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw error;
    }
  }
}

/** The live pull holding this staging dir, and since when (the lock file's mtime), or undefined. */
export async function stagingHolder(dir: string): Promise<{ holder: LockHolder; sinceMs: number } | undefined> {
  const holder = await readLockHolder(dir);
  if (!holder || !isAlive(holder)) return undefined;
  const sinceMs = await stat(lockPath(dir)).then(
    (s) => s.mtimeMs,
    () => Date.now(),
  );
  return { holder, sinceMs };
}

/**
 * The pulls running now, in any process, by the manifest hex their staging dir is named by
 * (`pid N, corral pull <ref>`): what `plan` and `status` outside the puller know of them.
 */
export async function runningPulls(imagesDir: string): Promise<Record<string, string>> {
  const root = stagingDir(imagesDir, '');
  const running: Record<string, string> = {};
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (!/^[0-9a-f]{64}$/.test(name)) continue;
    const held = await stagingHolder(path.join(root, name));
    if (held) running[name] = `pid ${held.holder.pid}, corral ${held.holder.command}`;
  }
  return running;
}
