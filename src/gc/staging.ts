/**
 * Staging dirs of pulls (`<imagesDir>/staging/<manifest hex>/`, docs/oci-format.md "Pull"): a pull
 * writes an image's files and a journal there, then moves them into place and removes the dir. A
 * pull that was killed or failed leaves its dir behind, so that pulling the same image again
 * resumes it. Which of them go:
 *
 * - never one a live pull holds: every pull, whoever runs it (a pass, `corral pull` by hand, a
 *   base fetch), holds the dir's lock (src/state/staging-lock.ts) from its first write until its
 *   files have landed. The lock, not an age, says "in use": a pull may run for hours;
 * - never one of an image a profile wants now (a followed digest, a `base: {oci}` version): its
 *   next try resumes there, however long the registry is away;
 * - otherwise, once nothing was written there for `gc.keepInterruptedPulls` (1d): a recently killed
 *   pull stays resumable, an abandoned one does not fill imagesDir.
 *
 * Removal takes the dir's lock first, so no pull ever loses files under its feet: a pull that got
 * the lock first keeps the dir; one starting while gc holds it fails transiently (and is retried),
 * or finds the dir gone and makes it again.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { stagingDir } from '../images/base-cache.js';
import { lockStaging, stagingHolder } from '../state/staging-lock.js';
import type { Removal } from './policy.js';

export interface StagingEntry {
  /** Absolute path of the dir (or of a stray file directly under staging/). */
  path: string;
  /** The manifest digest's hex the dir is named by ('' when the name is not one). */
  hex: string;
  /** Bytes allocated on disk (pulled files are sparse: their apparent size says little). */
  bytes: number;
  /** Newest modification time of the dir or anything in it. */
  newestMs: number;
  /** The live pull holding it, if any. */
  heldBy?: { pid: number; command: string; sinceMs: number };
}

export interface StagingFacts {
  entries: readonly StagingEntry[];
  /** Hex digests of images profiles want now (followed template digests, `base: {oci}` versions). */
  wanted: ReadonlySet<string>;
  now: number;
  keepMs: number;
}

/** Which staging dirs are garbage: a pure decision over a listing. */
export function abandonedStaging(facts: StagingFacts): Removal[] {
  const out: Removal[] = [];
  for (const e of facts.entries) {
    if (e.heldBy) continue;
    if (e.hex && facts.wanted.has(e.hex)) continue;
    if (facts.now - e.newestMs < facts.keepMs) continue;
    const idle = Math.floor((facts.now - e.newestMs) / 3_600_000);
    out.push({
      path: e.path,
      bytes: e.bytes,
      reason: `staging dir of an interrupted pull no profile wants, untouched for ${idle} h`,
    });
  }
  return out;
}

export async function listStaging(imagesDir: string): Promise<StagingEntry[]> {
  const root = stagingDir(imagesDir, '');
  const entries = await readdir(root, { withFileTypes: true }).catch(() => []);
  const out: StagingEntry[] = [];
  for (const e of entries) {
    const dir = path.join(root, e.name);
    const info = await stat(dir).catch(() => undefined);
    if (!info) continue;
    const hex = /^[0-9a-f]{64}$/.test(e.name) ? e.name : '';
    let bytes = info.blocks * 512;
    let newestMs = info.mtimeMs;
    if (info.isDirectory()) {
      for (const f of await readdir(dir).catch(() => [] as string[])) {
        const fi = await stat(path.join(dir, f)).catch(() => undefined);
        if (!fi) continue;
        bytes += fi.blocks * 512;
        newestMs = Math.max(newestMs, fi.mtimeMs);
      }
    }
    const held = info.isDirectory() ? await stagingHolder(dir) : undefined;
    out.push({
      path: dir,
      hex,
      bytes,
      newestMs,
      ...(held ? { heldBy: { pid: held.holder.pid, command: held.holder.command, sinceMs: held.sinceMs } } : {}),
    });
  }
  return out;
}

/** Removes an abandoned staging dir under its own lock; false when a pull took it meanwhile. */
export async function removeStaging(dir: string, log: Logger): Promise<boolean> {
  const info = await stat(dir).catch(() => undefined);
  if (!info) return true;
  if (!info.isDirectory()) {
    await rm(dir, { force: true });
    return true;
  }
  let lock;
  try {
    lock = await lockStaging(dir, 'gc', log);
  } catch {
    return false; // a pull holds it now: it is in use again
  }
  try {
    await rm(dir, { recursive: true, force: true });
  } finally {
    await lock.release();
  }
  return true;
}
