/**
 * OCI push and pull of a 1 GiB disk (half zeros, half random, in alternating 64 MiB runs) against
 * Debian's docker-registry on loopback, compared with `cp` of the same file and with `skopeo copy`
 * of a single-layer gzip image of it (sardinecake's format). Pull times include decompression to
 * a usable disk for both. Also: the zstd binding against the `zstd` binary through execa.
 */
import { randomBytes } from 'node:crypto';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { RegistryClient } from '../src/oci/client.js';
import { fetchImage, pullImage } from '../src/oci/pull.js';
import { pushImage } from '../src/oci/push.js';
import { DEFAULT_CHUNK_SIZE, ZSTD_LEVEL } from '../src/oci/format.js';
import { compressChunk, decompressChunk } from '../src/oci/zstd.js';
import { startRegistry } from '../test/harness/registry.js';
import { median, timeMs, type BenchResult } from './types.js';

const GiB = 1024 ** 3;
const RUN = 64 * 1024 * 1024;
const RUNS = 3;
const anonymous = { get: () => Promise.resolve(undefined) };

async function makeDisk(file: string): Promise<void> {
  const fh = await open(file, 'w');
  const zero = Buffer.alloc(RUN);
  for (let at = 0, i = 0; at < GiB; at += RUN, i++) await fh.write(i % 2 === 0 ? randomBytes(RUN) : zero, 0, RUN, at);
  await fh.close();
}

const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;

export async function benchOci(): Promise<BenchResult[]> {
  const work = await mkdtemp(join(tmpdir(), 'corral-bench-oci-'));
  // A fresh registry per run: nothing is already there, and skopeo cannot mount from a repository it saw before.
  let registry = await startRegistry();
  try {
    const disk = join(work, 'disk.raw');
    await makeDisk(disk);
    let client = new RegistryClient(registry.host, { credentials: anonymous });
    const cpMs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      cpMs.push((await timeMs(() => execa('cp', [disk, join(work, 'copy.raw')]))).ms);
      await rm(join(work, 'copy.raw'));
    }
    const pushMs: number[] = [];
    const pullMs: number[] = [];
    let lastDigest = '';
    for (let i = 0; i < RUNS; i++) {
      if (i > 0) {
        await registry.stop();
        registry = await startRegistry();
        client = new RegistryClient(registry.host, { credentials: anonymous });
      }
      const repo = `bench/disk${i}`;
      const pushed = await timeMs(() =>
        pushImage(
          [{ name: 'disk', path: disk, format: 'raw' }],
          {},
          { client, repository: repo, tag: 'v1', chunkSize: DEFAULT_CHUNK_SIZE, concurrency: 4 },
        ),
      );
      pushMs.push(pushed.ms);
      lastDigest = pushed.value.digest;
      const staging = join(work, `pull${i}`);
      const pulled = await timeMs(async () => {
        const image = await fetchImage(client, repo, 'v1');
        return pullImage(image!, staging, { client, repository: repo, concurrency: 4 });
      });
      pullMs.push(pulled.ms);
      await rm(staging, { recursive: true });
    }
    const unchanged = await timeMs(() =>
      pushImage(
        [{ name: 'disk', path: disk, format: 'raw' }],
        {},
        { client, repository: `bench/disk${RUNS - 1}`, tag: 'v2', chunkSize: DEFAULT_CHUNK_SIZE, concurrency: 4 },
      ),
    );

    // The skopeo/gzip path: a one-layer OCI image (tar+gzip of the disk), copied to the registry and back, then unpacked.
    const layout = await gzipLayout(work, disk);
    const skopeoPushMs: number[] = [];
    const skopeoPullMs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await registry.stop();
      registry = await startRegistry();
      const dest = `docker://${registry.host}/bench/skopeo${i}:v1`;
      skopeoPushMs.push(
        (await timeMs(() => execa('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${layout}:v1`, dest]))).ms,
      );
      const out = join(work, `skopeo-out${i}`);
      skopeoPullMs.push(
        (
          await timeMs(async () => {
            await execa('skopeo', ['copy', '-q', '--src-tls-verify=false', dest, `oci:${out}:v1`]);
            const index = JSON.parse(await readText(join(out, 'index.json'))) as { manifests: { digest: string }[] };
            const manifest = JSON.parse(await readText(blobPath(out, index.manifests[0]!.digest))) as {
              layers: { digest: string }[];
            };
            await mkdir(join(out, 'disk'));
            await execa('tar', ['-xzf', blobPath(out, manifest.layers[0]!.digest), '-C', join(out, 'disk')]);
          })
        ).ms,
      );
      await rm(out, { recursive: true });
    }
    const cp = median(cpMs);
    const push = median(pushMs);
    const pull = median(pullMs);
    const sPush = median(skopeoPushMs);
    const sPull = median(skopeoPullMs);
    const pushVsCp = cp / push;
    const pullVsCp = cp / pull;
    const pushVsSkopeo = sPush / push;
    const pullVsSkopeo = sPull / pull;
    return [
      {
        name: 'oci: push of a 1 GiB disk (half zeros) to a loopback registry',
        figures: {
          ms: Math.round(push),
          cpMs: Math.round(cp),
          skopeoGzipMs: Math.round(sPush),
          'speed vs cp': round(pushVsCp),
          'faster than skopeo/gzip': round(pushVsSkopeo),
          digest: lastDigest.slice(0, 19),
        },
        target: { text: '≥ 0.8 × cp and ≥ 4 × skopeo/gzip', met: pushVsCp >= 0.8 && pushVsSkopeo >= 4 },
      },
      {
        name: 'oci: pull of the same disk, decompressed to a usable sparse file',
        figures: {
          ms: Math.round(pull),
          cpMs: Math.round(cp),
          skopeoGzipMs: Math.round(sPull),
          'speed vs cp': round(pullVsCp),
          'faster than skopeo/gzip': round(pullVsSkopeo),
        },
        target: { text: '≥ 0.8 × cp and ≥ 4 × skopeo/gzip', met: pullVsCp >= 0.8 && pullVsSkopeo >= 4 },
      },
      {
        name: 'oci: unchanged second push',
        figures: {
          ms: Math.round(unchanged.ms),
          uploadedBytes: unchanged.value.uploadedBytes,
          uploadedBlobs: unchanged.value.uploadedBlobs,
        },
        target: { text: '0 disk bytes sent', met: unchanged.value.uploadedBytes === 0 },
      },
      await benchZstd(),
    ];
  } finally {
    await registry.stop();
    await rm(work, { recursive: true, force: true });
  }
}

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

async function gzipLayout(work: string, disk: string): Promise<string> {
  const layout = join(work, 'gzip-layout');
  const blobs = join(layout, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layer = join(work, 'layer.tar.gz');
  await execa('bash', ['-c', `tar -C "$(dirname "$1")" -cf - "$(basename "$1")" | gzip -c > "$2"`, 'x', disk, layer]);
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
  return layout;
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
