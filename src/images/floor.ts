/**
 * The free-space floor of imagesDir: before a download or a build, below the floor, collect
 * garbage first; still below, refuse with a message saying how much is free and what the floor is,
 * rather than fill the disk (a full disk corrupts running guests' overlays, not just the build).
 */
import { mkdir, statfs } from 'node:fs/promises';
import path from 'node:path';
import { TransientError } from '../errors.js';
import { formatBytes } from '../util/size.js';

export interface DiskFloorDeps {
  dir: string;
  minFreeBytes: number;
  /** Collects garbage; called at most once per check. */
  collect: () => Promise<unknown>;
}

export async function freeBytes(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true });
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Free space where `dir` is (or would be): for `status`, which creates nothing. */
export async function freeBytesAt(dir: string): Promise<number | undefined> {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const s = await statfs(d).catch(() => undefined);
    if (s) return s.bavail * s.bsize;
    if (path.dirname(d) === d) return undefined;
  }
}

export class DiskFloor {
  constructor(private readonly deps: DiskFloorDeps) {}

  /** Resolves when there is room for `what`; throws a TransientError otherwise (the build is backed off and status shows why). */
  async check(what: string): Promise<void> {
    if (this.deps.minFreeBytes <= 0) return;
    if ((await freeBytes(this.deps.dir)) >= this.deps.minFreeBytes) return;
    await this.deps.collect();
    const free = await freeBytes(this.deps.dir);
    if (free >= this.deps.minFreeBytes) return;
    throw new TransientError(
      `imagesDir ${this.deps.dir} has ${formatBytes(free)} free, below minFreeSpace ${formatBytes(this.deps.minFreeBytes)} even after collecting garbage; refusing to ${what} (free some space or lower minFreeSpace)`,
    );
  }
}
