/**
 * The chunk-digest cache against a real registry (Debian's docker-registry on 127.0.0.1): an
 * unchanged file is pushed from its record without being read, and any change to the file — or a
 * record that no longer tells the truth — falls back to reading it, always giving the digests a
 * push without a cache gives.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChunkCache, fileIdentity } from '../../src/oci/chunk-cache.js';
import { RegistryClient } from '../../src/oci/client.js';
import { fetchImage, pullImage } from '../../src/oci/pull.js';
import { pushImage, type PushOptions, type SourceFile } from '../../src/oci/push.js';
import { countingProxy, startRegistry, type CountingProxy, type Registry } from '../harness/registry.js';

const CHUNK = 256 * 1024;
const anonymous = { get: () => Promise.resolve(undefined) };
let registry: Registry;
let proxy: CountingProxy;
let dir: string;
let disk: string;
let files: SourceFile[];
let client: RegistryClient;
let cacheDir: string;
let repoCount = 0;

const newRepo = () => `cache/r${++repoCount}`;
/** The test files are written just before use, so the racy margin is 0 here (see the racy test). */
const cache = (racyMarginMs = 0) => new ChunkCache(cacheDir, { racyMarginMs });
const push = (repository: string, extra: Partial<PushOptions> = {}) =>
  pushImage(files, {}, { client, repository, tag: 'v1', chunkSize: CHUNK, concurrency: 2, ...extra });
/** A timestamp tick passes, so a write after this moves mtime and ctime even on coarse clocks. */
const tick = () => new Promise((r) => setTimeout(r, 30));

async function writeDisk(): Promise<void> {
  // 1 MiB: random (stored raw), zeros, text (compressed), random.
  const text = Buffer.from(Array.from({ length: CHUNK }, (_, i) => 97 + ((i * 7 + (i >> 9)) % 26)));
  await writeFile(disk, Buffer.concat([randomBytes(CHUNK), Buffer.alloc(CHUNK), text, randomBytes(CHUNK)]));
  await tick();
}

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await countingProxy(registry.host);
  client = new RegistryClient(proxy.host, { credentials: anonymous, retryDelayMs: 10 });
  dir = await mkdtemp(path.join(tmpdir(), 'corral-chunk-cache-'));
  disk = path.join(dir, 'disk');
  files = [{ name: 'disk', path: disk, format: 'raw' }];
});

beforeEach(async () => {
  cacheDir = path.join(dir, `cache-${++repoCount}`);
  await writeDisk();
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('chunk cache', () => {
  it('pushes an unchanged file from its record: HEADs only, same digest, no upload', async () => {
    const plain = await push(newRepo());
    const first = await push(newRepo(), { chunkCache: cache() });
    expect(first.cachedFiles).toBe(0);
    expect(first.digest).toBe(plain.digest);
    expect(await readdir(cacheDir)).toHaveLength(1);
    proxy.reset();
    const repo = newRepo();
    await push(repo); // the blobs are in this repository now
    proxy.reset();
    const second = await push(repo, { chunkCache: cache() });
    expect(second.cachedFiles).toBe(1);
    expect(second.digest).toBe(plain.digest);
    expect(second.chunks).toBe(4);
    expect(second.zeroChunks).toBe(1);
    expect(second.uploadedBytes).toBe(0);
    expect(proxy.blobUploads()).toEqual([]);
    expect(proxy.requests.filter((r) => r.method === 'HEAD')).toHaveLength(3 + 1); // three chunks and the config
  });

  it('names the layers after the file as this push names it, not as the record does', async () => {
    await push(newRepo(), { chunkCache: cache() });
    const asBase = [{ name: 'base', path: disk, format: 'raw' }];
    const plain = await pushImage(asBase, {}, { client, repository: newRepo(), chunkSize: CHUNK, concurrency: 2 });
    const repo = newRepo();
    const cached = await pushImage(
      asBase,
      {},
      { client, repository: repo, chunkSize: CHUNK, concurrency: 2, chunkCache: cache() },
    );
    expect(cached.cachedFiles).toBe(1);
    expect(cached.digest).toBe(plain.digest);
    const image = await fetchImage(client, repo, cached.digest);
    expect(new Set(image!.chunks.map((c) => c.file))).toEqual(new Set(['base']));
  });

  it('reads back, re-encodes and checks what a registry lacks, and the pull gives the same bytes', async () => {
    await push(newRepo(), { chunkCache: cache() });
    const repo = newRepo();
    const stats = await push(repo, { chunkCache: cache() });
    expect(stats.cachedFiles).toBe(1);
    expect(stats.uploadedBlobs).toBe(3 + 1);
    const image = await fetchImage(client, repo, 'v1');
    const { files: pulled } = await pullImage(image!, path.join(dir, `pull-${repoCount}`), {
      client,
      repository: repo,
      concurrency: 2,
    });
    expect((await readFile(pulled['disk']!)).equals(await readFile(disk))).toBe(true);
  });

  it('is not used once the file changes, even with its size and mtime put back', async () => {
    await push(newRepo(), { chunkCache: cache() });
    const before = await fileIdentity(disk);
    const fh = await open(disk, 'r+');
    await fh.write(randomBytes(4096), 0, 4096, 3 * CHUNK + 100);
    await fh.close();
    // Restore the old mtime as `touch -d` or `cp -p` would: ctime still moves, and that is enough.
    const mtime = new Date(Number(BigInt(before.mtimeNs) / 1_000_000n));
    await utimes(disk, mtime, mtime);
    const plain = await push(newRepo());
    const repo = newRepo();
    await push(repo);
    proxy.reset();
    const changed = await push(repo, { chunkCache: cache() });
    expect(changed.cachedFiles).toBe(0);
    expect(changed.digest).toBe(plain.digest);
    // The record now describes the new content.
    const again = await push(repo, { chunkCache: cache() });
    expect(again.cachedFiles).toBe(1);
    expect(again.digest).toBe(plain.digest);
  });

  it('falls back to reading the file when a record does not match its bytes', async () => {
    await push(newRepo(), { chunkCache: cache() });
    const [name] = await readdir(cacheDir);
    const recordFile = path.join(cacheDir, name!);
    const record = JSON.parse(await readFile(recordFile, 'utf8')) as { layers: { digest: string }[] };
    record.layers[0]!.digest = `sha256:${'0'.repeat(64)}`; // a blob no registry has, so it must be read back
    await writeFile(recordFile, JSON.stringify(record));
    const plain = await push(newRepo());
    const stats = await push(newRepo(), { chunkCache: cache() });
    expect(stats.cachedFiles).toBe(0);
    expect(stats.digest).toBe(plain.digest);
  });

  it('keeps no record of a file written within the racy margin, nor for another chunk size', async () => {
    const racy = await push(newRepo(), { chunkCache: cache(60_000) });
    expect(racy.cachedFiles).toBe(0);
    expect(await readdir(cacheDir).catch(() => [])).toEqual([]);
    await push(newRepo(), { chunkCache: cache() });
    const other = await pushImage(
      files,
      {},
      { client, repository: newRepo(), chunkSize: CHUNK * 2, concurrency: 2, chunkCache: cache() },
    );
    expect(other.cachedFiles).toBe(0);
  });

  it('prunes the records of files that are gone', async () => {
    await push(newRepo(), { chunkCache: cache() });
    const gone = path.join(dir, 'gone');
    await writeFile(gone, randomBytes(1000));
    await tick();
    await pushImage(
      [{ name: 'disk', path: gone }],
      {},
      { client, repository: newRepo(), chunkSize: CHUNK, concurrency: 2, chunkCache: cache() },
    );
    expect(await readdir(cacheDir)).toHaveLength(2);
    await rm(gone);
    await cache().prune();
    expect(await readdir(cacheDir)).toHaveLength(1);
  });
});
