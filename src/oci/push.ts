/**
 * Pushing files as a corral image: each file is read once, in order, and cut into chunks; each
 * non-zero chunk is hashed, compressed and uploaded by a bounded pool of workers, skipping every
 * blob the registry already has (HEAD) or can mount from another repository. The manifest lists
 * the chunks in file order, so the same files always give the same manifest digest.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
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
import { sha256Digest } from './digest.js';
import { compressChunk } from './zstd.js';

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
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export async function pushImage(
  files: SourceFile[],
  rest: Omit<ImageConfig, 'files' | 'chunkSize' | 'compression' | 'corralFormat'>,
  opts: PushOptions,
): Promise<PushStats> {
  const { client, repository: repo } = opts;
  const stats: PushStats = {
    digest: '',
    chunks: 0,
    zeroChunks: 0,
    uploadedBlobs: 0,
    uploadedBytes: 0,
    skippedBlobs: 0,
    mountedBlobs: 0,
    totalBytes: 0,
  };
  const progress: PushProgress = { chunksDone: 0, chunksSeen: 0, bytesRead: 0, bytesTotal: 0, bytesUploaded: 0 };
  const entries: FileEntry[] = [];
  for (const f of files) {
    const fh = await open(f.path, 'r');
    const size = (await fh.stat()).size;
    await fh.close();
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
  const ensureBlob = (digest: string, data: Buffer): Promise<void> => {
    let p = uploads.get(digest);
    if (!p) {
      p = (async () => {
        if (await client.hasBlob(repo, digest)) return void stats.skippedBlobs++;
        for (const from of opts.mountFrom ?? [])
          if (from !== repo && (await client.mountBlob(repo, digest, from))) return void stats.mountedBlobs++;
        await client.uploadBlob(repo, digest, data, opts.uploadChunkBytes ?? 0);
        stats.uploadedBlobs++;
        stats.uploadedBytes += data.length;
        progress.bytesUploaded += data.length;
      })();
      uploads.set(digest, p);
    }
    return p;
  };

  const queue = new PQueue({ concurrency: opts.concurrency });
  const layers: Descriptor[] = [];
  const tasks: Promise<void>[] = [];
  let failed = false;
  const zero = Buffer.alloc(opts.chunkSize);
  const pool: Buffer[] = [];
  const report = () => opts.onProgress?.({ ...progress });
  try {
    for (const [i, f] of files.entries()) {
      const entry = entries[i]!;
      const fh = await open(f.path, 'r');
      try {
        for (let offset = 0; offset < entry.size && !failed; offset += opts.chunkSize) {
          const len = Math.min(opts.chunkSize, entry.size - offset);
          // Buffers are reused: fresh 32 MiB allocations cost a page fault per 4 KiB on every chunk.
          const buffer = pool.pop() ?? Buffer.allocUnsafeSlow(opts.chunkSize);
          const raw = buffer.subarray(0, len);
          let got = 0;
          while (got < len) {
            const { bytesRead } = await fh.read(raw, got, len - got, offset + got);
            if (bytesRead === 0) throw new Error(`${f.path} shrank while it was being pushed`);
            got += bytesRead;
          }
          progress.bytesRead += len;
          stats.chunks++;
          if (raw.equals(zero.subarray(0, len))) {
            stats.zeroChunks++;
            pool.push(buffer);
            report();
            continue;
          }
          const slot = layers.length;
          layers.push(undefined as unknown as Descriptor);
          progress.chunksSeen++;
          const processChunk = async () => {
            const usha = await sha256Digest(raw);
            const packed = (await worthCompressing(raw)) ? await compressChunk(raw, ZSTD_LEVEL) : undefined;
            const digest = packed ? await sha256Digest(packed) : usha;
            await ensureBlob(digest, packed ?? raw);
            layers[slot] = chunkDescriptor(
              f.name,
              offset,
              len,
              usha,
              digest,
              (packed ?? raw).length,
              packed ? CHUNK_MEDIA_TYPE : RAW_CHUNK_MEDIA_TYPE,
            );
            progress.chunksDone++;
            report();
          };
          const task = queue.add(async () => {
            try {
              await processChunk();
            } finally {
              pool.push(buffer);
            }
          });
          task.catch(() => (failed = true));
          tasks.push(task as Promise<void>);
          // Read ahead by at most one queue's worth: memory stays at ~2 × concurrency chunks.
          await queue.onSizeLessThan(opts.concurrency);
        }
      } finally {
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
  await ensureBlob(configDigest, configBytes);
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
  return packed.length < sample.length * 0.95;
}
