/**
 * Pushing files as a corral image: each file is read once, in order, and cut into chunks, each
 * chunk hashed while it is read (one pass over its bytes); each non-zero chunk is compressed and
 * uploaded by a bounded pool of workers, skipping every blob the registry already has (HEAD) or
 * can mount from another repository. The manifest lists the chunks in file order, so the same
 * files always give the same manifest digest. With a chunk cache, a file unchanged since a push
 * read it is not read again (chunk-cache.ts).
 */
import { createHash, type Hash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import PQueue from 'p-queue';
import { canonicalJson } from '../util/hash.js';
import type { RegistryClient } from './client.js';
import {
  ANNOTATION,
  ARTIFACT_TYPE,
  chunkDescriptor,
  CHUNK_MEDIA_TYPE,
  RAW_CHUNK_MEDIA_TYPE,
  CONFIG_MEDIA_TYPE,
  MANIFEST_MEDIA_TYPE,
  ZSTD_LEVEL,
  type Descriptor,
  type FileEntry,
  type ImageConfig,
  type ImageManifest,
} from './format.js';
import { BufferPool } from './buffer-pool.js';
import { fileIdentity, type ChunkCache, type FileIdentity } from './chunk-cache.js';
import { HASH_SLICE, sha256Digest } from './digest.js';
import { compressChunk, ZSTD_ENCODER } from './zstd.js';

export interface SourceFile extends Omit<FileEntry, 'size'> {
  path: string;
}

export interface PushProgress {
  chunksDone: number;
  /** Chunks known so far (grows while files are read). */
  chunksSeen: number;
  bytesRead: number;
  bytesTotal: number;
  bytesUploaded: number;
}

export interface PushOptions {
  client: RegistryClient;
  repository: string;
  /** Tag to point at the pushed manifest (none: pushed by digest only). */
  tag?: string;
  chunkSize: number;
  concurrency: number;
  /** Upload blobs larger than this in PATCH chunks of this size (0: one PUT per blob). */
  uploadChunkBytes?: number;
  /** Repositories on the same registry to try mounting missing blobs from. */
  mountFrom?: string[];
  annotations?: Record<string, string>;
  onProgress?: (p: PushProgress) => void;
  /** Chunk digests of files pushed before, so unchanged files are not read again. */
  chunkCache?: ChunkCache;
}

export interface PushStats {
  digest: string;
  chunks: number;
  zeroChunks: number;
  uploadedBlobs: number;
  uploadedBytes: number;
  skippedBlobs: number;
  mountedBlobs: number;
  /** Uncompressed bytes of the files. */
  totalBytes: number;
  /** Files taken from the chunk cache (not read unless a blob was missing). */
  cachedFiles: number;
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** What produced the chunks' blobs: a chunk record made by another encoder or level is not used. */
const ENCODER = `${ZSTD_ENCODER} level ${ZSTD_LEVEL}`;

/** A chunk as it goes to the registry. */
interface EncodedChunk {
  digest: string;
  blob: Buffer;
  mediaType: string;
}

/** The pushed files' chunk records were out of date after all (see pushImage). */
class StaleChunkRecord extends Error {}

export async function pushImage(
  files: SourceFile[],
  rest: Omit<ImageConfig, 'files' | 'chunkSize' | 'compression' | 'corralFormat'>,
  opts: PushOptions,
): Promise<PushStats> {
  try {
    return await pushOnce(files, rest, opts);
  } catch (err) {
    if (!(err instanceof StaleChunkRecord) || !opts.chunkCache) throw err;
    // A recorded digest did not match the file's bytes: the record lied, so push without any.
    for (const f of files) await opts.chunkCache.forget(f.path);
    const { chunkCache: _dropped, ...withoutCache } = opts;
    return pushOnce(files, rest, withoutCache);
  }
}

async function pushOnce(
  files: SourceFile[],
  rest: Omit<ImageConfig, 'files' | 'chunkSize' | 'compression' | 'corralFormat'>,
  opts: PushOptions,
): Promise<PushStats> {
  const { client, repository: repo, chunkCache: cache } = opts;
  const stats: PushStats = {
    digest: '',
    chunks: 0,
    zeroChunks: 0,
    uploadedBlobs: 0,
    uploadedBytes: 0,
    skippedBlobs: 0,
    mountedBlobs: 0,
    totalBytes: 0,
    cachedFiles: 0,
  };
  const progress: PushProgress = { chunksDone: 0, chunksSeen: 0, bytesRead: 0, bytesTotal: 0, bytesUploaded: 0 };
  const entries: FileEntry[] = [];
  const identities: FileIdentity[] = [];
  for (const f of files) {
    const identity = await fileIdentity(f.path);
    identities.push(identity);
    const size = Number(identity.size);
    entries.push({
      name: f.name,
      size,
      ...(f.format ? { format: f.format } : {}),
      ...(f.backing ? { backing: f.backing } : {}),
    });
    progress.bytesTotal += size;
  }
  stats.totalBytes = progress.bytesTotal;
  const uploads = new Map<string, Promise<void>>();
  /** Makes sure the registry has the blob; `data` is only asked for when it must be sent. */
  const ensureBlob = (digest: string, data: () => Promise<Buffer> | Buffer): Promise<void> => {
    let p = uploads.get(digest);
    if (!p) {
      p = (async () => {
        if (await client.hasBlob(repo, digest)) return void stats.skippedBlobs++;
        for (const from of opts.mountFrom ?? [])
          if (from !== repo && (await client.mountBlob(repo, digest, from))) return void stats.mountedBlobs++;
        const bytes = await data();
        await client.uploadBlob(repo, digest, bytes, opts.uploadChunkBytes ?? 0);
        stats.uploadedBlobs++;
        stats.uploadedBytes += bytes.length;
        progress.bytesUploaded += bytes.length;
      })();
      uploads.set(digest, p);
    }
    return p;
  };

  const queue = new PQueue({ concurrency: opts.concurrency });
  const layers: Descriptor[] = [];
  const tasks: Promise<void>[] = [];
  let failed = false;
  const pool = new BufferPool(opts.chunkSize);
  const report = () => opts.onProgress?.({ ...progress });
  /** Runs a chunk's work on the pool; reading stays at most one pool ahead (~2 × concurrency chunks in memory). */
  const schedule = async (work: () => Promise<void>) => {
    const task = queue.add(work);
    task.catch(() => (failed = true));
    tasks.push(task as Promise<void>);
    await queue.onSizeLessThan(opts.concurrency);
  };
  try {
    for (const [i, f] of files.entries()) {
      const entry = entries[i]!;
      const record = await cache?.lookup(f.path, identities[i]!, opts.chunkSize, ENCODER);
      const fh = await open(f.path, 'r');
      try {
        if (record) {
          // Unchanged since a push read it: HEAD each blob, read back only what the registry lacks.
          stats.cachedFiles++;
          stats.chunks += record.chunks;
          stats.zeroChunks += record.zeroChunks;
          progress.bytesRead += entry.size;
          progress.chunksSeen += record.layers.length;
          for (const recorded of record.layers) {
            if (failed) break;
            // The record's layers, under this push's name for the file (the same file may be a
            // base image's `disk` in one push and a template's `base` in the next).
            const a = recorded.annotations ?? {};
            const layer = chunkDescriptor(
              f.name,
              Number(a[ANNOTATION.offset]),
              Number(a[ANNOTATION.size]),
              a[ANNOTATION.digest] ?? '',
              recorded.digest,
              recorded.size,
              recorded.mediaType,
            );
            layers.push(layer);
            await schedule(async () => {
              const buffer = pool.take();
              try {
                await ensureBlob(layer.digest, async () => {
                  const offset = Number(layer.annotations?.[ANNOTATION.offset]);
                  const len = Number(layer.annotations?.[ANNOTATION.size]);
                  const read = await readChunk(fh, buffer.subarray(0, len), offset, f.path);
                  const encoded = read.digest ? await encodeChunk(buffer.subarray(0, len), read.digest) : undefined;
                  if (read.digest !== layer.annotations?.[ANNOTATION.digest] || encoded?.digest !== layer.digest)
                    throw new StaleChunkRecord(`${f.path} at ${offset} no longer matches its chunk record`);
                  return encoded.blob;
                });
              } finally {
                pool.give(buffer);
              }
              progress.chunksDone++;
              report();
            });
          }
          await Promise.all(tasks);
          continue;
        }
        const readStartedAt = Date.now();
        const first = layers.length;
        const chunksBefore = stats.chunks;
        const zeroBefore = stats.zeroChunks;
        for (let offset = 0; offset < entry.size && !failed; offset += opts.chunkSize) {
          const len = Math.min(opts.chunkSize, entry.size - offset);
          const buffer = pool.take();
          const raw = buffer.subarray(0, len);
          const { digest: usha } = await readChunk(fh, raw, offset, f.path);
          progress.bytesRead += len;
          stats.chunks++;
          if (!usha) {
            stats.zeroChunks++;
            pool.give(buffer);
            report();
            continue;
          }
          const slot = layers.length;
          layers.push(undefined as unknown as Descriptor);
          progress.chunksSeen++;
          await schedule(async () => {
            try {
              const encoded = await encodeChunk(raw, usha);
              await ensureBlob(encoded.digest, () => encoded.blob);
              layers[slot] = chunkDescriptor(
                f.name,
                offset,
                len,
                usha,
                encoded.digest,
                encoded.blob.length,
                encoded.mediaType,
              );
            } finally {
              pool.give(buffer);
            }
            progress.chunksDone++;
            report();
          });
        }
        await Promise.all(tasks);
        if (cache)
          await cache.store(
            {
              path: f.path,
              chunkSize: opts.chunkSize,
              encoder: ENCODER,
              chunks: stats.chunks - chunksBefore,
              zeroChunks: stats.zeroChunks - zeroBefore,
              layers: layers.slice(first),
            },
            identities[i]!,
            await fileIdentity(f.path),
            readStartedAt,
          );
      } finally {
        // After a failure, let the chunks in flight finish before their file closes under them.
        queue.clear();
        await queue.onIdle();
        await fh.close();
      }
    }
    await Promise.all(tasks);
  } finally {
    queue.clear();
    await queue.onIdle();
  }

  const config: ImageConfig = {
    corralFormat: 1,
    chunkSize: opts.chunkSize,
    compression: 'zstd',
    files: entries,
    ...rest,
  };
  const configBytes = Buffer.from(canonicalJson(config));
  const configDigest = sha(configBytes);
  await ensureBlob(configDigest, () => configBytes);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MANIFEST_MEDIA_TYPE,
    artifactType: ARTIFACT_TYPE,
    config: { mediaType: CONFIG_MEDIA_TYPE, digest: configDigest, size: configBytes.length },
    layers,
    ...(rest.template || opts.annotations
      ? {
          annotations: {
            ...(rest.template
              ? { [ANNOTATION.profile]: rest.template.profile, [ANNOTATION.gen]: rest.template.gen }
              : {}),
            ...opts.annotations,
          },
        }
      : {}),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  stats.digest = await client.putManifest(repo, opts.tag ?? sha(bytes), MANIFEST_MEDIA_TYPE, bytes);
  return stats;
}

/** Compressed data must be smaller than this share of the raw bytes to be stored compressed. */
const MIN_SAVING = 0.95;

/** Sampled slices: 4 × 64 KiB spread over the chunk. */
const SAMPLE = 64 * 1024;

/**
 * Whether compressing the chunk pays: a sample of it is compressed at the fastest level, and a
 * chunk whose sample shrinks by less than 5% (already compressed or encrypted data) is stored raw.
 * Decided from the bytes alone, so the same chunk is always stored the same way.
 */
async function worthCompressing(raw: Buffer): Promise<boolean> {
  const step = Math.floor((raw.length - SAMPLE) / 3);
  const sample =
    raw.length <= 4 * SAMPLE ? raw : Buffer.concat([0, 1, 2, 3].map((i) => raw.subarray(i * step, i * step + SAMPLE)));
  const packed = await compressChunk(sample, 1);
  return packed.length < sample.length * MIN_SAVING;
}

/**
 * Reads `raw.length` bytes at `offset` into `raw` in slices, hashing each slice as it lands while
 * it is still in the CPU cache. A chunk that is all zeros so far is not hashed yet: an all-zero
 * chunk (not stored) costs no hashing at all. Returns the chunk's digest, or none when it is all zeros.
 */
async function readChunk(
  fh: FileHandle,
  raw: Buffer,
  offset: number,
  file: string,
): Promise<{ digest: string | undefined }> {
  let hash: Hash | undefined;
  for (let at = 0; at < raw.length;) {
    const end = Math.min(at + HASH_SLICE, raw.length);
    const slice = raw.subarray(at, end);
    for (let got = 0; got < slice.length;) {
      const { bytesRead } = await fh.read(slice, got, slice.length - got, offset + at + got);
      if (bytesRead === 0) throw new Error(`${file} shrank while it was being pushed`);
      got += bytesRead;
    }
    if (hash) hash.update(slice);
    else if (!isZero(slice)) {
      hash = createHash('sha256');
      hash.update(raw.subarray(0, end));
    }
    at = end;
  }
  return { digest: hash ? `sha256:${hash.digest('hex')}` : undefined };
}

const ZEROS = Buffer.alloc(HASH_SLICE);

function isZero(b: Buffer): boolean {
  return b.equals(ZEROS.subarray(0, b.length));
}

/**
 * Stored raw (its digest is then the content digest) when a sample does not compress, or when the
 * whole chunk saves less than 5% (a pull then neither decompresses nor re-hashes it); else zstd.
 * Both tests look at the bytes alone, so the same chunk is always stored the same way.
 */
async function encodeChunk(raw: Buffer, digest: string): Promise<EncodedChunk> {
  const stored = { digest, blob: raw, mediaType: RAW_CHUNK_MEDIA_TYPE };
  if (!(await worthCompressing(raw))) return stored;
  const packed = await compressChunk(raw, ZSTD_LEVEL);
  if (packed.length >= raw.length * MIN_SAVING) return stored;
  return { digest: await sha256Digest(packed), blob: packed, mediaType: CHUNK_MEDIA_TYPE };
}
