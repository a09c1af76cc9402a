/**
 * The chunked image format against a real registry (Debian's docker-registry on 127.0.0.1),
 * through a counting proxy so every claim about what was sent or fetched is checked on the wire.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile, readdir, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/oci/client.js';
import { dockerCredentialStore } from '../../src/oci/credentials.js';
import { fetchImage, pullImage } from '../../src/oci/pull.js';
import { pushImage, type SourceFile } from '../../src/oci/push.js';
import { countingProxy, startRegistry, type CountingProxy, type Registry } from '../harness/registry.js';
import { REPO } from '../builders/profile-dir.js';

const CHUNK = 256 * 1024;
const anonymous = { get: () => Promise.resolve(undefined) };
let registry: Registry;
let proxy: CountingProxy;
let dir: string;
let files: SourceFile[];
let client: RegistryClient;

async function makeDisk(file: string): Promise<void> {
  // 4 MiB: compressible text, zeros, random (stored raw), zeros — a quarter of a chunk-aligned disk each.
  const mib = 1024 * 1024;
  const text = Buffer.from(
    Array.from({ length: mib }, (_, i) => 97 + ((i * 7 + (i >> 9) + Math.floor(Math.random() * 3)) % 26)),
  );
  await writeFile(file, Buffer.concat([text, Buffer.alloc(mib), randomBytes(mib), Buffer.alloc(mib)]));
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  return (await readFile(a)).equals(await readFile(b));
}

const push = (repo: string, tag: string, extra: Partial<Parameters<typeof pushImage>[2]> = {}) =>
  pushImage(files, {}, { client, repository: repo, tag, chunkSize: CHUNK, concurrency: 4, ...extra });

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await countingProxy(registry.host);
  dir = await mkdtemp(path.join(tmpdir(), 'corral-oci-'));
  await makeDisk(path.join(dir, 'disk'));
  await writeFile(path.join(dir, 'kernel'), randomBytes(100_000));
  files = [
    { name: 'disk', path: path.join(dir, 'disk'), format: 'raw' },
    { name: 'kernel', path: path.join(dir, 'kernel') },
  ];
  client = new RegistryClient(proxy.host, { credentials: anonymous, retryDelayMs: 10 });
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('push and pull', () => {
  it('pushes non-zero chunks only and pulls identical, sparse bytes', async () => {
    const stats = await push('t/one', 'v1');
    expect(stats.chunks).toBe(16 + 1);
    expect(stats.zeroChunks).toBe(8);
    expect(stats.uploadedBlobs).toBe(9 + 1); // 8 disk chunks, the kernel, the config
    const image0 = await fetchImage(client, 't/one', 'v1');
    const types = image0!.chunks.map((c) => c.blob.mediaType);
    expect(types.filter((t) => t.endsWith('+zstd'))).toHaveLength(4); // the text quarter
    expect(types.filter((t) => t === 'application/vnd.corral.chunk.v1')).toHaveLength(4 + 1); // random disk chunks and the random kernel: stored raw
    const image = await fetchImage(client, 't/one', 'v1');
    expect(image?.digest).toBe(stats.digest);
    const staging = path.join(dir, 'pull-1');
    const { files: pulled, stats: ps } = await pullImage(image!, staging, {
      client,
      repository: 't/one',
      concurrency: 4,
    });
    expect(ps.downloadedBlobs).toBe(9);
    expect(await sameBytes(pulled['disk']!, path.join(dir, 'disk'))).toBe(true);
    expect(await sameBytes(pulled['kernel']!, path.join(dir, 'kernel'))).toBe(true);
    const st = await stat(pulled['disk']!);
    expect(st.size).toBe(4 * 1024 * 1024);
    expect(st.blocks * 512).toBeLessThanOrEqual(2.1 * 1024 * 1024); // the zero halves are holes
  });

  it('writes pulled chunks around the page cache (O_DIRECT), and through it where the filesystem has no O_DIRECT', async () => {
    const stats = await push('t/direct', 'v1');
    const image = await fetchImage(client, 't/direct', stats.digest);
    const resident = async (file: string) =>
      Number((await execa('fincore', ['--bytes', '--noheadings', '--output', 'RES', file])).stdout.trim());
    // Where the temp dir's filesystem takes O_DIRECT (ext4 on the development machine), nothing of
    // the pulled disk is left in the page cache, compressed chunks (decompressed, then copied) and
    // raw ones alike. A temp dir on tmpfs refuses it: then only the bytes are checked here.
    const directWorks = await open(
      path.join(dir, 'direct-probe'),
      constants.O_CREAT | constants.O_WRONLY | constants.O_DIRECT,
    )
      .then(async (h) => (await h.close(), true))
      .catch(() => false);
    const onDisk = await pullImage(image!, path.join(dir, 'pull-direct'), {
      client,
      repository: 't/direct',
      concurrency: 4,
    });
    if (directWorks) expect(await resident(onDisk.files['disk']!)).toBe(0);
    expect(await sameBytes(onDisk.files['disk']!, path.join(dir, 'disk'))).toBe(true);
    expect(await sameBytes(onDisk.files['kernel']!, path.join(dir, 'kernel'))).toBe(true); // its unaligned tail too
    // tmpfs refuses O_DIRECT: the same pull goes through the page cache and lands the same bytes.
    const shm = await mkdtemp('/dev/shm/corral-oci-');
    try {
      const inMemory = await pullImage(image!, path.join(shm, 'pull'), {
        client,
        repository: 't/direct',
        concurrency: 4,
      });
      expect(await sameBytes(inMemory.files['disk']!, path.join(dir, 'disk'))).toBe(true);
      expect(await sameBytes(inMemory.files['kernel']!, path.join(dir, 'kernel'))).toBe(true);
    } finally {
      await rm(shm, { recursive: true, force: true });
    }
  });

  it('an unchanged second push uploads no blob and gives the same digest', async () => {
    const first = await push('t/one', 'v1');
    proxy.reset();
    const second = await push('t/one', 'v1b');
    expect(second.digest).toBe(first.digest);
    expect(second.uploadedBlobs).toBe(0);
    expect(second.uploadedBytes).toBe(0);
    expect(proxy.blobUploads()).toEqual([]);
  });

  it('a one-block change uploads one chunk', async () => {
    const fh = await open(path.join(dir, 'disk'), 'r+');
    await fh.write(randomBytes(4096), 0, 4096, 2 * 1024 * 1024 + 8192);
    await fh.close();
    proxy.reset();
    const stats = await push('t/one', 'v2');
    expect(stats.uploadedBlobs).toBe(1);
    expect(proxy.blobUploads()).toHaveLength(1);
  });

  it('uploads in PATCH pieces when asked and mounts across repositories', async () => {
    proxy.reset();
    const chunked = await push('t/chunked', 'v1', { uploadChunkBytes: 64 * 1024 });
    expect(proxy.requests.filter((r) => r.method === 'PATCH').length).toBeGreaterThanOrEqual(4 * 4); // each raw 256 KiB chunk in four pieces
    const image = await fetchImage(client, 't/chunked', chunked.digest);
    const { files: pulled } = await pullImage(image!, path.join(dir, 'pull-chunked'), {
      client,
      repository: 't/chunked',
      concurrency: 2,
    });
    expect(await sameBytes(pulled['disk']!, path.join(dir, 'disk'))).toBe(true);
    proxy.reset();
    const mounted = await push('t/mounted', 'v1', { mountFrom: ['t/chunked'] });
    expect(mounted.uploadedBlobs).toBe(0);
    expect(mounted.mountedBlobs).toBe(10);
    expect(proxy.blobUploads()).toEqual([]);
  });

  it('a killed pull resumes and downloads only the missing chunks', async () => {
    const stats = await push('t/kill', 'v1');
    const staging = path.join(dir, 'pull-killed');
    const script = path.join(dir, 'pull.mjs');
    await writeFile(
      script,
      `import { RegistryClient } from ${JSON.stringify(path.join(REPO, 'dist/oci/client.js'))};
import { fetchImage, pullImage } from ${JSON.stringify(path.join(REPO, 'dist/oci/pull.js'))};
const client = new RegistryClient(${JSON.stringify(proxy.host)}, { credentials: { get: async () => undefined } });
const image = await fetchImage(client, 't/kill', ${JSON.stringify(stats.digest)});
await pullImage(image, ${JSON.stringify(staging)}, { client, repository: 't/kill', concurrency: 1 });
console.log('finished');
`,
    );
    const child = execa('node', [script], { reject: false });
    proxy.onBlobDownloaded = (n) => {
      if (n === 5) child.kill('SIGKILL'); // the config and four chunks are through
    };
    const result = await child;
    proxy.onBlobDownloaded = undefined;
    expect(result.stdout).not.toContain('finished');
    expect(await readdir(staging)).toContain('journal');
    proxy.reset();
    const image = await fetchImage(client, 't/kill', stats.digest);
    const { files: pulled, stats: ps } = await pullImage(image!, staging, {
      client,
      repository: 't/kill',
      concurrency: 4,
    });
    expect(ps.resumedChunks).toBeGreaterThanOrEqual(3);
    expect(ps.downloadedBlobs).toBe(9 - ps.resumedChunks);
    expect(proxy.blobDownloads().length).toBe(1 + ps.downloadedBlobs); // config + missing chunks
    expect(await sameBytes(pulled['disk']!, path.join(dir, 'disk'))).toBe(true);
  });

  it('stores a chunk raw when its sample compresses but the whole chunk saves under 5%', async () => {
    // 1 MiB of random bytes with 8 KiB of zeros where each of the four 64 KiB sample slices starts:
    // the sample shrinks by ~12%, the chunk by ~3%.
    const mib = 1024 * 1024;
    const data = randomBytes(mib);
    const step = Math.floor((mib - 64 * 1024) / 3);
    for (let i = 0; i < 4; i++) data.fill(0, i * step, i * step + 8192);
    const file = path.join(dir, 'barely');
    await writeFile(file, data);
    const stats = await pushImage(
      [{ name: 'disk', path: file }],
      {},
      { client, repository: 't/barely', tag: 'v1', chunkSize: mib, concurrency: 1 },
    );
    const image = await fetchImage(client, 't/barely', stats.digest);
    expect(image!.chunks.map((c) => c.blob.mediaType)).toEqual(['application/vnd.corral.chunk.v1']);
    expect(image!.chunks[0]!.blob.digest).toBe(`sha256:${createHash('sha256').update(data).digest('hex')}`);
    const { files: pulled } = await pullImage(image!, path.join(dir, 'pull-barely'), {
      client,
      repository: 't/barely',
      concurrency: 1,
    });
    expect((await readFile(pulled['disk']!)).equals(data)).toBe(true);
  });

  it('a corrupted blob fails verification', async () => {
    const stats = await push('t/corrupt', 'v1');
    const image = await fetchImage(client, 't/corrupt', stats.digest);
    const victim = image!.chunks[2]!.blob.digest.replace('sha256:', '');
    const data = path.join(registry.storage, 'docker/registry/v2/blobs/sha256', victim.slice(0, 2), victim, 'data');
    const bytes = await readFile(data);
    bytes.writeUInt8(bytes.readUInt8(bytes.length >> 1) ^ 0xff, bytes.length >> 1);
    await writeFile(data, bytes);
    await expect(
      pullImage(image!, path.join(dir, 'pull-corrupt'), {
        client: new RegistryClient(proxy.host, { credentials: anonymous, retries: 0 }),
        repository: 't/corrupt',
        concurrency: 2,
      }),
    ).rejects.toThrow(/failed verification/);
  });

  it('skopeo reads the manifest', async () => {
    const stats = await push('t/skopeo', 'v1');
    const r = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/t/skopeo:v1`,
    ]);
    const manifest = JSON.parse(r.stdout) as { config: { mediaType: string }; layers: unknown[] };
    expect(manifest.config.mediaType).toBe('application/vnd.corral.template.config.v1+json');
    expect(manifest.layers).toHaveLength(9);
    const digest = await execa(
      'skopeo',
      ['inspect', '--format', '{{.Digest}}', '--tls-verify=false', `docker://${registry.host}/t/skopeo:v1`],
      { reject: false },
    );
    if (digest.exitCode === 0) expect(digest.stdout.trim()).toBe(stats.digest);
  });
});

describe('credentials', () => {
  let secured: Registry;
  let home: string;
  const BIN = path.join(REPO, 'bin/corral.js');
  beforeAll(async () => {
    secured = await startRegistry({ htpasswd: { user: 'ci', password: 's3cret' } });
    home = await mkdtemp(path.join(tmpdir(), 'corral-docker-'));
  });
  afterAll(async () => {
    await secured?.stop();
    await rm(home, { recursive: true, force: true });
  });
  const corral = (args: string[], input?: string) =>
    execa('node', [BIN, ...args], {
      reject: false,
      env: { DOCKER_CONFIG: home, CORRAL_CONFIG: '' },
      ...(input !== undefined ? { input } : {}),
      cwd: home,
    });

  it('is refused without credentials and works after corral login', async () => {
    const store = dockerCredentialStore({ DOCKER_CONFIG: home });
    const before = new RegistryClient(secured.host, { credentials: store, retries: 0 });
    await expect(before.ping()).rejects.toThrow(/needs credentials; run "corral login/);
    const wrong = await corral(['login', secured.host, '--username', 'ci', '--password-stdin'], 'nope\n');
    expect(wrong.exitCode).toBe(1);
    expect(wrong.stderr).toMatch(/refused the credentials of "ci"/);
    const ok = await corral(['login', secured.host, '--username', 'ci', '--password-stdin'], 's3cret\n');
    expect(ok.stderr).toBe('');
    expect(ok.exitCode).toBe(0);
    const after = new RegistryClient(secured.host, { credentials: dockerCredentialStore({ DOCKER_CONFIG: home }) });
    const stats = await pushImage(
      files,
      {},
      { client: after, repository: 'sec/img', tag: 'v1', chunkSize: CHUNK, concurrency: 2 },
    );
    expect(await after.resolve('sec/img', 'v1')).toBe(stats.digest);
    expect((await corral(['logout', secured.host])).exitCode).toBe(0);
    const gone = new RegistryClient(secured.host, {
      credentials: dockerCredentialStore({ DOCKER_CONFIG: home }),
      retries: 0,
    });
    await expect(gone.resolve('sec/img', 'v1')).rejects.toThrow(/needs credentials/);
  });
});
