/**
 * Pulling a corral image into a staging directory: every file is created at its full size (so
 * all-zero chunks cost nothing and stay holes), chunks are fetched, verified (compressed and
 * uncompressed digests), decompressed and written in parallel, skipping all-zero blocks so the
 * files stay sparse. A journal records each chunk once written; a pull that was killed resumes
 * from it, re-checking each journalled region's digest, and fetches only what is missing.
 *
 * Chunk data is written with O_DIRECT where the filesystem allows it (page-aligned pooled buffers,
 * page-aligned runs): a pulled image goes to disk without filling the page cache, so a 40 GB pull
 * does not evict the host's cache, the closing fsync has little left to flush, and the kernel does
 * not spend CPU allocating and copying into cache pages that the transfer needs for hashing
 * (docs/oci-format.md, *Performance*). Unaligned tails, and filesystems without O_DIRECT (tmpfs),
 * go through the page cache.
 */
import { constants } from 'node:fs';
import { appendFile, mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import PQueue from 'p-queue';
import { TransientError } from '../errors.js';
import { BufferPool, PAGE } from './buffer-pool.js';
import type { RegistryClient } from './client.js';
import { sha256Digest } from './digest.js';
import { parseImage, RAW_CHUNK_MEDIA_TYPE, type ChunkLayer, type ImageConfig, type ImageManifest } from './format.js';
import { decompressChunk } from './zstd.js';

export interface ResolvedImage {
  digest: string;
  manifest: ImageManifest;
  config: ImageConfig;
  chunks: ChunkLayer[];
}

/** Fetches and verifies the manifest and config (small), not the chunks. */
export async function fetchImage(
  client: RegistryClient,
  repo: string,
  reference: string,
): Promise<ResolvedImage | undefined> {
  const m = await client.getManifest(repo, reference);
  if (!m) return undefined;
  const raw = JSON.parse(m.bytes.toString('utf8')) as ImageManifest;
  if (!raw.config?.digest) throw new TransientError(`${client.registry}/${repo}@${m.digest} is not an image manifest`);
  const configBytes = await client.getBlob(repo, raw.config.digest, raw.config.size);
  try {
    return { digest: m.digest, ...parseImage(m.bytes, configBytes) };
  } catch (err) {
    throw new TransientError(`${client.registry}/${repo}@${m.digest}: ${(err as Error).message}`);
  }
}

export interface PullProgress {
  chunksDone: number;
  chunksTotal: number;
  bytesDone: number;
  bytesTotal: number;
  bytesDownloaded: number;
}

export interface PullOptions {
  client: RegistryClient;
  repository: string;
  concurrency: number;
  /** Names of files not to fetch (e.g. a base this host already has). */
  skip?: ReadonlySet<string>;
  onProgress?: (p: PullProgress) => void;
}

export interface PullStats {
  chunks: number;
  /** Chunks a previous, interrupted pull had already written and verified. */
  resumedChunks: number;
  downloadedBlobs: number;
  downloadedBytes: number;
}

const JOURNAL = 'journal';
/** Writes skip all-zero runs at this granularity so pulled disks stay sparse. */
const SPARSE_BLOCK = 64 * 1024;
const key = (c: ChunkLayer) => `${c.blob.digest} ${c.file} ${c.offset}`;

export async function pullImage(
  image: ResolvedImage,
  stagingDir: string,
  opts: PullOptions,
): Promise<{ files: Record<string, string>; stats: PullStats }> {
  await mkdir(stagingDir, { recursive: true });
  const wanted = image.config.files.filter((f) => !opts.skip?.has(f.name));
  const chunks = image.chunks.filter((c) => !opts.skip?.has(c.file));
  const stats: PullStats = { chunks: chunks.length, resumedChunks: 0, downloadedBlobs: 0, downloadedBytes: 0 };
  const progress: PullProgress = {
    chunksDone: 0,
    chunksTotal: chunks.length,
    bytesDone: 0,
    bytesTotal: chunks.reduce((n, c) => n + c.size, 0),
    bytesDownloaded: 0,
  };
  const journal = path.join(stagingDir, JOURNAL);
  const journalled = new Set((await readFile(journal, 'utf8').catch(() => '')).split('\n').filter(Boolean));
  const handles = new Map<string, Target>();
  const files: Record<string, string> = {};
  try {
    for (const f of wanted) {
      const file = path.join(stagingDir, f.name);
      files[f.name] = file;
      const fh = await open(file, 'a+').then(async (h) => (await h.close(), open(file, 'r+')));
      // EINVAL where the filesystem has no O_DIRECT: such a file is written through the page cache.
      const direct = await open(file, constants.O_WRONLY | constants.O_DIRECT).catch(() => undefined);
      handles.set(f.name, { fh, direct, directRefused: false });
      if ((await fh.stat()).size !== f.size) await fh.truncate(f.size);
    }
    const queue = new PQueue({ concurrency: opts.concurrency });
    const pool = new BufferPool(image.config.chunkSize);
    let failed = false;
    const report = () => opts.onProgress?.({ ...progress });
    const tasks = chunks.map((c) =>
      queue
        .add(async () => {
          if (failed) return;
          const target = handles.get(c.file)!;
          if (
            journalled.has(key(c)) &&
            (await regionDigest(target.fh, c.offset, c.size, pool)) === c.uncompressedDigest
          ) {
            stats.resumedChunks++;
          } else {
            const slot = pool.take();
            const into = c.blob.size <= slot.length ? slot.subarray(0, c.blob.size) : undefined;
            try {
              const packed = await opts.client.getBlob(opts.repository, c.blob.digest, c.blob.size, into);
              stats.downloadedBlobs++;
              stats.downloadedBytes += packed.length;
              progress.bytesDownloaded += packed.length;
              // getBlob verified the blob's digest; a raw chunk's blob digest is its content digest.
              const raw =
                c.blob.mediaType === RAW_CHUNK_MEDIA_TYPE
                  ? packed
                  : await decompressChunk(packed).catch((err: Error) => {
                      throw new TransientError(
                        `chunk ${c.blob.digest} of ${c.file} does not decompress: ${err.message}`,
                      );
                    });
              if (
                raw.length !== c.size ||
                (c.blob.mediaType !== RAW_CHUNK_MEDIA_TYPE && (await sha256Digest(raw)) !== c.uncompressedDigest)
              )
                throw new TransientError(
                  `chunk ${c.blob.digest} of ${c.file} at offset ${c.offset} failed verification: its content is not ${c.uncompressedDigest}`,
                );
              // A decompressed chunk is copied into the pooled buffer (its packed bytes are no longer
              // needed) so that it, too, can be written with O_DIRECT.
              const data = raw !== packed && raw.length <= slot.length ? slot.subarray(0, raw.copy(slot)) : raw;
              await writeSparse(target, data, c.offset, pool.isPageAligned(data));
            } finally {
              pool.give(slot);
            }
            await appendFile(journal, `${key(c)}\n`);
          }
          progress.chunksDone++;
          progress.bytesDone += c.size;
          report();
        })
        .catch((err: unknown) => {
          failed = true;
          throw err;
        }),
    );
    const results = await Promise.allSettled(tasks);
    const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (rejected) throw rejected.reason;
    for (const { fh } of handles.values()) await fh.sync();
  } finally {
    for (const { fh, direct } of handles.values()) await Promise.all([fh.close(), direct?.close()]);
  }
  return { files, stats };
}

async function regionDigest(fh: FileHandle, offset: number, size: number, pool: BufferPool): Promise<string> {
  const buf = pool.take(size);
  try {
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(buf, got, size - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return await sha256Digest(buf.subarray(0, got));
  } finally {
    pool.give(buf);
  }
}

/** A pulled file: its read-write handle, and a write-only O_DIRECT one where the filesystem has O_DIRECT. */
interface Target {
  fh: FileHandle;
  direct: FileHandle | undefined;
  /** A direct write was refused: the rest of this file goes through the page cache. */
  directRefused: boolean;
}

const ZERO_BLOCK = Buffer.alloc(SPARSE_BLOCK);

/**
 * Writes `data` at `offset`, leaving all-zero blocks unwritten (the file was truncated to size, so
 * they read as zeros). `pageAligned`: `data` starts on a page boundary, so its page-aligned runs
 * may go through O_DIRECT.
 */
async function writeSparse(target: Target, data: Buffer, offset: number, pageAligned: boolean): Promise<void> {
  let runStart = -1;
  for (let at = 0; at <= data.length; at += SPARSE_BLOCK) {
    const end = Math.min(at + SPARSE_BLOCK, data.length);
    const isZero = at >= data.length || data.subarray(at, end).equals(ZERO_BLOCK.subarray(0, end - at));
    if (!isZero && runStart < 0) runStart = at;
    if ((isZero || end === data.length) && runStart >= 0) {
      const stop = isZero ? at : end;
      await writeRun(target, data.subarray(runStart, stop), offset + runStart, pageAligned);
      runStart = -1;
    }
  }
}

async function writeRun(target: Target, run: Buffer, position: number, pageAligned: boolean): Promise<void> {
  // Runs start at multiples of SPARSE_BLOCK within a chunk; a file's last run may end mid-page.
  const direct = target.directRefused ? undefined : target.direct;
  const head = direct && pageAligned && position % PAGE === 0 ? run.length - (run.length % PAGE) : 0;
  if (direct && head > 0) {
    try {
      await writeAll(direct, run.subarray(0, head), position);
    } catch (err) {
      // A filesystem that opens with O_DIRECT but refuses this write (alignment it wants larger
      // than a page): this file goes through the page cache from now on. The handle stays open
      // (closed with the others) because other workers may be writing through it right now.
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      target.directRefused = true;
      return writeAll(target.fh, run, position);
    }
  }
  if (head < run.length) await writeAll(target.fh, run.subarray(head), position + head);
}

async function writeAll(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}
