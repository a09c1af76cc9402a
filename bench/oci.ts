/**
 * OCI push and pull of a 1 GiB disk (half zeros, half random, in alternating 64 MiB runs) against
 * Debian's docker-registry on loopback, compared with `cp` of the same file and with `skopeo copy`
 * of a single-layer gzip image of it (sardinecake's format). Pull times include decompression to
 * a usable disk for both. Also: an unchanged push with and without the chunk cache, and the zstd
 * binding against the `zstd` binary through execa.
 *
 * Fair by construction: every contender moves the same disk and runs as processes of its own,
 * timed whole (corral's push and pull through bench/oci-child.ts, as `corral push`/`pull` run,
 * Node's start-up included); the contenders take turns within
 * each run (cp, corral, skopeo), so a machine whose load drifts hurts them alike; before each
 * timed read of a file the file is read once, so each starts from the same warm page cache; each
 * push goes to a fresh registry that has nothing yet. Both push paths start from the disk file and
 * end with it in the registry: corral's includes chunking, hashing and zstd; the skopeo/gzip path
 * is `tar | gzip` of the disk into a one-layer image (timed once, from a warm cache; the digests the
 * image layout needs are computed outside the timing) plus `skopeo copy` of it, and the copy alone
 * is printed too. Both pull paths end with a usable disk: corral's pull ends with an fsync
 * of the pulled files (a template must survive a crash once it lands); cp and skopeo+tar do not sync.
 * The registry's own CPU time is printed per push: the registry hashes and stores every byte it is
 * sent, so its CPU time over the machine's cores bounds any client's push from below.
 */
import { randomBytes } from 'node:crypto';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { ChunkCache } from '../src/oci/chunk-cache.js';
import { RegistryClient } from '../src/oci/client.js';
import { pushImage, type PushOptions } from '../src/oci/push.js';
import { DEFAULT_CHUNK_SIZE, ZSTD_LEVEL } from '../src/oci/format.js';
import { compressChunk, decompressChunk } from '../src/oci/zstd.js';
import { startRegistry, type Registry } from '../test/harness/registry.js';
import { median, timeMs, type BenchResult } from './types.js';

const GiB = 1024 ** 3;
const RUN = 64 * 1024 * 1024;
const RUNS = Number(process.env['CORRAL_BENCH_OCI_RUNS'] ?? 3);
const anonymous = { get: () => Promise.resolve(undefined) };

async function makeDisk(file: string): Promise<void> {
  const fh = await open(file, 'w');
  const zero = Buffer.alloc(RUN);
  for (let at = 0, i = 0; at < GiB; at += RUN, i++) await fh.write(i % 2 === 0 ? randomBytes(RUN) : zero, 0, RUN, at);
  await fh.close();
}

/** Reads a file once so that the timed run after it starts from a warm page cache. */
async function warm(file: string): Promise<void> {
  for await (const _ of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) void _;
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
const range = (xs: number[], d = 0) => `${round(Math.min(...xs), d)}–${round(Math.max(...xs), d)}`;

interface Timed {
  ms: number;
  registryCpuMs: number;
  /** This process's CPU time: corral's for corral's runs (0 for skopeo's, which run in children). */
  ownCpuMs: number;
}

/** Times `fn`, and the registry's CPU time during it. */
async function timed<T>(registry: Registry, fn: () => Promise<T>): Promise<Timed & { value: T }> {
  const cpu0 = registry.cpuMs();
  const { ms, value } = await timeMs(fn);
  return { ms, registryCpuMs: registry.cpuMs() - cpu0, ownCpuMs: 0, value };
}

/** A corral push or pull in a process of its own (bench/oci-child.ts), timed as a whole. */
async function corral(
  registry: Registry,
  args: [op: 'push' | 'pull', repository: string, tag: string, target: string],
): Promise<Timed & { value: { digest?: string } }> {
  const child = fileURLToPath(new URL('./oci-child.js', import.meta.url));
  const t = await timed(registry, () => execa('node', [child, args[0], registry.host, ...args.slice(1)]));
  const out = JSON.parse(t.value.stdout) as { stats: { digest?: string }; cpuMs: number };
  return { ms: t.ms, registryCpuMs: t.registryCpuMs, ownCpuMs: out.cpuMs, value: out.stats };
}

export async function benchOci(): Promise<BenchResult[]> {
  const work = await mkdtemp(join(tmpdir(), 'corral-bench-oci-'));
  const registries: Registry[] = [];
  const fresh = async () => {
    const r = await startRegistry();
    registries.push(r);
    return r;
  };
  const loads = [loadavg()[0]!];
  try {
    const disk = join(work, 'disk.raw');
    await makeDisk(disk);
    // The skopeo/gzip path: a one-layer OCI image (tar+gzip of the disk), built before any timing.
    await warm(disk);
    const { dir: layout, layer, gzipMs } = await gzipLayout(work, disk);
    const files = [{ name: 'disk', path: disk, format: 'raw' }];
    const pushOpts = (client: RegistryClient, repository: string, tag: string): PushOptions => ({
      client,
      repository,
      tag,
      chunkSize: DEFAULT_CHUNK_SIZE,
      concurrency: 4,
    });
    const cpMs: number[] = [];
    const cpSyncMs: number[] = [];
    const push: Timed[] = [];
    const pull: Timed[] = [];
    const sPush: Timed[] = [];
    const sPull: Timed[] = [];
    let lastDigest = '';
    for (let i = 0; i < RUNS; i++) {
      await warm(disk);
      cpMs.push((await timeMs(() => execa('cp', [disk, join(work, 'copy.raw')]))).ms);
      await rm(join(work, 'copy.raw'));
      // For context only (the targets are against plain cp): a copy made durable, as corral's pull is.
      await warm(disk);
      const copy = join(work, 'copy.raw');
      cpSyncMs.push((await timeMs(async () => (await execa('cp', [disk, copy]), await execa('sync', [copy])))).ms);
      await rm(copy);

      let registry = await fresh();
      const repo = `bench/disk${i}`;
      await warm(disk);
      const pushed = await corral(registry, ['push', repo, 'v1', disk]);
      push.push(pushed);
      lastDigest = pushed.value.digest ?? '';
      const staging = join(work, `pull${i}`);
      pull.push(await corral(registry, ['pull', repo, 'v1', staging]));
      await rm(staging, { recursive: true });
      await registry.stop();

      registry = await fresh();
      const dest = `docker://${registry.host}/bench/skopeo${i}:v1`;
      await warm(layer);
      sPush.push(
        await timed(registry, () =>
          execa('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:v1`, dest]),
        ),
      );
      const out = join(work, `skopeo-out${i}`);
      sPull.push(
        await timed(registry, async () => {
          await execa('skopeo', ['copy', '-q', '--src-tls-verify=false', dest, `oci:${out}:v1`]);
          const index = JSON.parse(await readText(join(out, 'index.json'))) as { manifests: { digest: string }[] };
          const manifest = JSON.parse(await readText(blobPath(out, index.manifests[0]!.digest))) as {
            layers: { digest: string }[];
          };
          await mkdir(join(out, 'disk'));
          await execa('tar', ['-xzf', blobPath(out, manifest.layers[0]!.digest), '-C', join(out, 'disk')]);
        }),
      );
      await rm(out, { recursive: true });
      await registry.stop();
      loads.push(loadavg()[0]!);
    }

    // An unchanged second push: once re-reading the disk, once from the chunk cache.
    const registry = await fresh();
    const client = new RegistryClient(registry.host, { credentials: anonymous });
    const cache = new ChunkCache(join(work, 'oci-chunks'));
    await pushImage(files, {}, { ...pushOpts(client, 'bench/same', 'v1'), chunkCache: cache });
    await warm(disk);
    const reread = await timeMs(() => pushImage(files, {}, pushOpts(client, 'bench/same', 'v2')));
    const cached = await timeMs(() =>
      pushImage(files, {}, { ...pushOpts(client, 'bench/same', 'v3'), chunkCache: cache }),
    );
    client.close();
    await registry.stop();
    loads.push(loadavg()[0]!);

    const cores = availableParallelism();
    const cp = median(cpMs);
    const ms = (xs: Timed[]) => median(xs.map((x) => x.ms));
    const cpu = (xs: Timed[]) => median(xs.map((x) => x.registryCpuMs));
    const own = (xs: Timed[]) => median(xs.map((x) => x.ownCpuMs));
    const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]!);
    const pushVsCp = cp / ms(push);
    const pullVsCp = cp / ms(pull);
    const pushVsSkopeo = (gzipMs + ms(sPush)) / ms(push);
    const pushVsCopy = ms(sPush) / ms(push);
    const pullVsSkopeo = ms(sPull) / ms(pull);
    const pushFloor = cpu(push) / cores;
    const load = `${range(loads, 1)}`;
    return [
      {
        name: `oci: push of a 1 GiB disk (half zeros) to a loopback registry (median of ${RUNS}, load ${load})`,
        figures: {
          ms: Math.round(ms(push)),
          range: range(push.map((x) => x.ms)),
          cpMs: Math.round(cp),
          cpRange: range(cpMs),
          skopeoGzipMs: Math.round(gzipMs + ms(sPush)),
          gzipMs: Math.round(gzipMs),
          skopeoCopyMs: Math.round(ms(sPush)),
          'speed vs cp': round(pushVsCp),
          'faster than skopeo/gzip': round(pushVsSkopeo),
          'faster than skopeo copy alone': round(pushVsCopy),
          'per-run vs skopeo/gzip': range(
            ratios(
              sPush.map((x) => gzipMs + x.ms),
              push.map((x) => x.ms),
            ),
            2,
          ),
          registryCpuMs: Math.round(cpu(push)),
          corralCpuMs: Math.round(own(push)),
          skopeoRegistryCpuMs: Math.round(cpu(sPush)),
          [`registry-bound floor on ${cores} cores ms`]: Math.round(pushFloor),
          digest: lastDigest.slice(0, 19),
        },
        target: {
          text: `≥ 4 × skopeo/gzip (disk to registry: tar|gzip + skopeo copy) ${part(pushVsSkopeo, 4)} and ≥ 0.8 × cp ${part(pushVsCp, 0.8)}`,
          met: pushVsCp >= 0.8 && pushVsSkopeo >= 4,
        },
      },
      {
        name: `oci: pull of the same disk, verified, decompressed and synced to a usable sparse file (median of ${RUNS})`,
        figures: {
          ms: Math.round(ms(pull)),
          range: range(pull.map((x) => x.ms)),
          cpMs: Math.round(cp),
          'cp then sync ms': Math.round(median(cpSyncMs)),
          skopeoGzipMs: Math.round(ms(sPull)),
          'speed vs cp': round(pullVsCp),
          'faster than skopeo/gzip': round(pullVsSkopeo),
          'per-run vs skopeo': range(
            ratios(
              sPull.map((x) => x.ms),
              pull.map((x) => x.ms),
            ),
            2,
          ),
          registryCpuMs: Math.round(cpu(pull)),
          corralCpuMs: Math.round(own(pull)),
        },
        target: {
          text: `≥ 4 × skopeo/gzip ${part(pullVsSkopeo, 4)} and ≥ 0.8 × cp ${part(pullVsCp, 0.8)}`,
          met: pullVsCp >= 0.8 && pullVsSkopeo >= 4,
        },
      },
      {
        name: 'oci: unchanged second push (every blob already in the registry)',
        figures: {
          rereadMs: Math.round(reread.ms),
          chunkCacheMs: Math.round(cached.ms),
          uploadedBytes: reread.value.uploadedBytes + cached.value.uploadedBytes,
          uploadedBlobs: reread.value.uploadedBlobs + cached.value.uploadedBlobs,
          filesFromCache: cached.value.cachedFiles,
        },
        target: {
          text: '0 disk bytes sent',
          met: reread.value.uploadedBytes === 0 && cached.value.uploadedBytes === 0,
        },
      },
      await benchZstd(),
    ];
  } finally {
    for (const r of registries) await r.stop();
    await rm(work, { recursive: true, force: true });
  }
}

/** One half of a two-part target, with its ratio: `(met: 5.9×)` or `(missed: 0.26×)`. */
const part = (ratio: number, wanted: number) => `(${ratio >= wanted ? 'met' : 'missed'}: ${round(ratio)}×)`;

/** One 32 MiB chunk of each kind (random, half zero, text-like), compressed and decompressed both ways. */
async function benchZstd(): Promise<BenchResult> {
  const n = DEFAULT_CHUNK_SIZE;
  const text = Buffer.alloc(n);
  for (let i = 0; i < n; i++) text[i] = 97 + ((i * 7 + (i >> 9)) % 26);
  const chunks = [randomBytes(n), Buffer.concat([randomBytes(n / 2), Buffer.alloc(n / 2)]), text];
  const level = String(ZSTD_LEVEL);
  const bin = (args: string[], input: Buffer) =>
    execa('zstd', args, { input, encoding: 'buffer', stripFinalNewline: false }).then((r) => Buffer.from(r.stdout));
  const packed: Buffer[] = [];
  const bindC = await timeMs(async () => {
    for (const c of chunks) packed.push(await compressChunk(c, ZSTD_LEVEL));
  });
  const binC = await timeMs(async () => {
    for (const c of chunks) await bin([`-${level}`, '-q', '-c'], c);
  });
  const bindD = await timeMs(async () => {
    for (const p of packed) await decompressChunk(p);
  });
  const binD = await timeMs(async () => {
    for (const p of packed) await bin(['-d', '-q', '-c'], p);
  });
  return {
    name: 'oci: zstd binding (@mongodb-js/zstd) vs the zstd binary via execa, 3 × 32 MiB chunks',
    figures: {
      bindingCompressMs: Math.round(bindC.ms),
      binaryCompressMs: Math.round(binC.ms),
      bindingDecompressMs: Math.round(bindD.ms),
      binaryDecompressMs: Math.round(binD.ms),
      'binding speed-up': round((binC.ms + binD.ms) / (bindC.ms + bindD.ms), 1),
    },
  };
}

async function gzipLayout(work: string, disk: string): Promise<{ dir: string; layer: string; gzipMs: number }> {
  const layout = join(work, 'gzip-layout');
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layer = join(work, 'layer.tar.gz');
  const { ms: gzipMs } = await timeMs(() =>
    execa('bash', ['-c', `tar -C "$(dirname "$1")" -cf - "$(basename "$1")" | gzip -c > "$2"`, 'x', disk, layer]),
  );
  const layerDigest = await fileSha(layer);
  const diffId = (await execa('bash', ['-c', 'gzip -dc "$1" | sha256sum', 'x', layer])).stdout.split(' ')[0]!;
  await execa('mv', [layer, join(blobs, layerDigest)]);
  const layerSize = (await open(join(blobs, layerDigest), 'r').then(
    async (f) => (await f.stat()).size + (await f.close(), 0),
  )) as number;
  const config = Buffer.from(
    JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${diffId}`] } }),
  );
  const configDigest = sha(config);
  await writeFile(join(blobs, configDigest), config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: `sha256:${configDigest}`,
        size: config.length,
      },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${layerDigest}`, size: layerSize },
      ],
    }),
  );
  const manifestDigest = sha(manifest);
  await writeFile(join(blobs, manifestDigest), manifest);
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${manifestDigest}`,
          size: manifest.length,
          annotations: { 'org.opencontainers.image.ref.name': 'v1' },
        },
      ],
    }),
  );
  return { dir: layout, layer: join(blobs, layerDigest), gzipMs };
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function fileSha(file: string): Promise<string> {
  return (await execa('sha256sum', [file])).stdout.split(' ')[0]!;
}

async function readText(file: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  return readFile(file, 'utf8');
}

function blobPath(layout: string, digest: string): string {
  return join(layout, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
}
