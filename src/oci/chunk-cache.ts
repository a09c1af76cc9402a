/**
 * What a push learnt about a file — its chunks' digests and blob descriptors — kept in the state
 * dir (`oci-chunks/`) and keyed by the file's identity: device, inode, size, and mtime and ctime
 * to the nanosecond. Pushing the same unchanged file again (a new tag, another registry, the same
 * base under a new template) then reads and hashes nothing: it HEADs each blob, and only a blob
 * the registry lacks is read back, re-encoded and checked against the recorded digest before it
 * is sent.
 *
 * Sound because any write to the file moves its mtime and ctime, and ctime cannot be set back
 * from user space (`touch -d`, `cp -p` and rsync restore mtime only). A record is kept only
 * when the file's timestamps are older, by more than a filesystem timestamp tick, than the moment
 * reading began, and the file looked the same before and after reading (git's "racily clean"
 * rule): a write in the same tick as the read could otherwise leave both timestamps unchanged.
 * A record also names the chunk size and the encoder, so a change of either ignores it.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';
import type { Descriptor } from './format.js';

export interface FileIdentity {
  dev: string;
  ino: string;
  size: string;
  mtimeNs: string;
  ctimeNs: string;
}

export interface ChunkRecord {
  /** Absolute path, so records of files that are gone can be pruned. */
  path: string;
  identity: FileIdentity;
  chunkSize: number;
  encoder: string;
  chunks: number;
  zeroChunks: number;
  /** The file's layers in offset order, as they go into the manifest. */
  layers: Descriptor[];
}

export interface ChunkCacheOptions {
  /** How much older than the start of reading a file's timestamps must be (default 2 s). */
  racyMarginMs?: number;
}

export async function fileIdentity(file: string): Promise<FileIdentity> {
  const s = await stat(file, { bigint: true });
  return {
    dev: String(s.dev),
    ino: String(s.ino),
    size: String(s.size),
    mtimeNs: String(s.mtimeNs),
    ctimeNs: String(s.ctimeNs),
  };
}

const sameIdentity = (a: FileIdentity, b: FileIdentity) =>
  a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;

export class ChunkCache {
  private readonly racyMarginMs: number;

  constructor(
    readonly dir: string,
    opts: ChunkCacheOptions = {},
  ) {
    this.racyMarginMs = opts.racyMarginMs ?? 2000;
  }

  private recordFile(file: string): string {
    return path.join(this.dir, `${createHash('sha256').update(path.resolve(file)).digest('hex')}.json`);
  }

  /** The record for this file if it still describes it (same identity, chunk size and encoder). */
  async lookup(
    file: string,
    identity: FileIdentity,
    chunkSize: number,
    encoder: string,
  ): Promise<ChunkRecord | undefined> {
    const text = await readFile(this.recordFile(file), 'utf8').catch(() => undefined);
    if (!text) return undefined;
    let record: ChunkRecord;
    try {
      record = JSON.parse(text) as ChunkRecord;
    } catch {
      return undefined;
    }
    if (
      record.path !== path.resolve(file) ||
      !record.identity ||
      !sameIdentity(record.identity, identity) ||
      record.chunkSize !== chunkSize ||
      record.encoder !== encoder ||
      !Array.isArray(record.layers)
    )
      return undefined;
    return record;
  }

  /**
   * Keeps what a push read from `file`, if it is safe to: `before` and `after` are the file's
   * identity before and after reading, `readStartedAt` when reading began (ms since the epoch).
   */
  async store(
    record: Omit<ChunkRecord, 'identity'>,
    before: FileIdentity,
    after: FileIdentity,
    readStartedAt: number,
  ): Promise<boolean> {
    const mtime = BigInt(before.mtimeNs);
    const ctime = BigInt(before.ctimeNs);
    const newest = Number((mtime > ctime ? mtime : ctime) / 1_000_000n);
    if (!sameIdentity(before, after) || newest > readStartedAt - this.racyMarginMs) {
      await this.forget(record.path);
      return false;
    }
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(
      this.recordFile(record.path),
      JSON.stringify({ ...record, path: path.resolve(record.path), identity: before }),
    );
    return true;
  }

  async forget(file: string): Promise<void> {
    await rm(this.recordFile(file), { force: true });
  }

  /** Removes records of files that no longer exist. */
  async prune(): Promise<void> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      const text = await readFile(path.join(this.dir, name), 'utf8').catch(() => '');
      let file: string | undefined;
      try {
        file = (JSON.parse(text) as Partial<ChunkRecord>).path;
      } catch {
        file = undefined;
      }
      if (
        !file ||
        !(await stat(file).then(
          () => true,
          () => false,
        ))
      )
        await rm(path.join(this.dir, name), { force: true });
    }
  }
}
