import { open, readdir, rename, rm } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Writes a file so that readers see either the old or the new content, never a half-written one. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, path);
  } catch (error) {
    // A full disk or a read-only remount must not leave our temp file behind.
    await rm(temp, { force: true }).catch(() => undefined);
    throw error;
  }
  await syncDir(dirname(path));
}

/** Matches the temp names writeFileAtomic uses. */
export const ATOMIC_TEMP = /^\..+\.[0-9a-f]{8}\.tmp$/;

/**
 * Removes the temp files a killed writer left in dir (and a half-swapped `current` link). Only for
 * the lock holder, at start: nobody else writes there then.
 */
export async function sweepTempFiles(dir: string): Promise<number> {
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (!ATOMIC_TEMP.test(name) && !/^\.current-[0-9a-f]{8}$/.test(name)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
