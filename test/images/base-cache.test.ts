/**
 * The content-addressed base cache with real qemu-img and a real local HTTP server: local files,
 * pinned and checksum-listed URLs, one download per version, wrong digests refused, cut transfers
 * resumed with a Range request.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TransientError } from '../../src/errors.js';
import { execaExec } from '../../src/exec/exec.js';
import { BaseCache, formatProgress, partialPath } from '../../src/images/base-cache.js';
import { filesUnder } from '../harness/guests.js';
import { ImageServer } from '../harness/image-server.js';

let dir: string;
const server = new ImageServer();
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'corral-base-cache-'));
  await server.start();
});
afterAll(async () => {
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});
let images: string;
afterEach(() => {
  server.requests.length = 0;
});

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
function cache(imagesDir = images): BaseCache {
  return new BaseCache({ imagesDir, run: execaExec, clock: () => new Date() });
}
async function format(file: string): Promise<string> {
  const { stdout } = await execaExec('qemu-img', ['info', '--output=json', file]);
  return (JSON.parse(stdout) as { format: string }).format;
}
async function qcow2(name: string, size = '4M'): Promise<Buffer> {
  const file = path.join(dir, name);
  await execaExec('qemu-img', ['create', '-q', '-f', 'qcow2', file, size]);
  return readFile(file);
}

describe('BaseCache, local files', () => {
  it('converts a raw base to qcow2 under its digest, records where it came from, then reuses it', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    const raw = path.join(dir, 'base.raw');
    await writeFile(raw, Buffer.alloc(1024 * 1024, 7));
    const hex = sha(await readFile(raw));
    const cached = await cache().ensure({ kind: 'file', file: 'base.raw' }, `sha256:${hex}`, dir);
    expect(cached).toBe(path.join(images, 'base/sha256', `${hex}.qcow2`));
    expect(await format(cached)).toBe('qcow2');
    const record = await cache().describe(`sha256:${hex}`);
    expect(record).toMatchObject({ version: `sha256:${hex}`, sourceFormat: 'converted', source: { kind: 'file' } });
    expect(record?.digest).toBe(`sha256:${sha(await readFile(cached))}`);
    await rm(raw);
    expect(await cache().ensure({ kind: 'file', file: 'base.raw' }, `sha256:${hex}`, dir)).toBe(cached);
  });

  it('copies a qcow2 base byte for byte, and refuses a base whose bytes changed since compile', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    const bytes = await qcow2('local.qcow2');
    const cached = await cache().ensure({ kind: 'file', file: 'local.qcow2' }, `sha256:${sha(bytes)}`, dir);
    expect(sha(await readFile(cached))).toBe(sha(bytes));
    await writeFile(path.join(dir, 'changed.raw'), 'new bytes');
    await expect(
      cache().ensure({ kind: 'file', file: 'changed.raw' }, `sha256:${'0'.repeat(64)}`, dir),
    ).rejects.toBeInstanceOf(TransientError);
  });
});

describe('BaseCache, URLs', () => {
  it('downloads a version once, however many builds ask at once or later', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    const hex = server.publish('once.qcow2', await qcow2('once.qcow2'));
    const base = { kind: 'checksums' as const, url: `${server.url}/once.qcow2`, checksums: `${server.url}/SHA256SUMS` };
    const c = cache();
    const [a, b] = await Promise.all([c.ensure(base, `sha256:${hex}`, dir), c.ensure(base, `sha256:${hex}`, dir)]);
    expect(a).toBe(b);
    expect(await cache().ensure(base, `sha256:${hex}`, dir)).toBe(a);
    expect(server.downloads('/once.qcow2')).toHaveLength(1);
    expect(sha(await readFile(a))).toBe(hex);
    expect(await filesUnder(path.join(images, 'base'))).toEqual([`sha256/${hex}.json`, `sha256/${hex}.qcow2`]);
  });

  it('a wrong checksum is a clear error and caches nothing', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    server.publish('wrong.qcow2', await qcow2('wrong.qcow2'));
    const claimed = 'f'.repeat(64);
    const base = {
      kind: 'checksums' as const,
      url: `${server.url}/wrong.qcow2`,
      checksums: `${server.url}/SHA256SUMS`,
    };
    const error = await cache()
      .ensure(base, `sha256:${claimed}`, dir)
      .catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toMatch(
      new RegExp(
        `downloaded ${server.url}/wrong.qcow2: its sha256 is [0-9a-f]{64}, but the checksum list .*SHA256SUMS says ${claimed}; discarded, nothing cached`,
      ),
    );
    expect(await filesUnder(path.join(images, 'base'))).toEqual([]);
  });

  it('a download cut midway resumes with a Range request and fetches only what was missing', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    // A raw image large enough to cut: also exercises raw → qcow2 conversion after the resume.
    const raw = Buffer.alloc(3 * 1024 * 1024, 1);
    raw.write('not a qcow2 header', 0);
    const hex = server.publish('cut.raw', raw);
    const base = { kind: 'url' as const, url: `${server.url}/cut.raw`, sha256: hex };
    server.cutNext('/cut.raw', 1024 * 1024);
    await expect(cache().ensure(base, `sha256:${hex}`, dir)).rejects.toThrow(/partial file is kept/);
    // Whatever arrived before the cut is kept (the socket may drop the tail of what was sent).
    const kept = (await stat(partialPath(images, `sha256:${hex}`))).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(1024 * 1024);
    const cached = await cache().ensure(base, `sha256:${hex}`, dir);
    const served = server.downloads('/cut.raw');
    expect(served.map((r) => [r.status, r.range ?? null, r.bytes])).toEqual([
      [200, null, 1024 * 1024],
      [206, `bytes=${kept}-`, raw.length - kept],
    ]);
    expect(await format(cached)).toBe('qcow2');
    expect(await cache().describe(`sha256:${hex}`)).toMatchObject({ sourceFormat: 'converted' });
    expect(await readdir(path.join(images, 'base/downloads'))).toEqual([]);
  });

  it('reads file:// URLs as well (a large image kept outside the profiles repository)', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    const bytes = await qcow2('elsewhere.qcow2');
    const url = pathToFileURL(path.join(dir, 'elsewhere.qcow2')).href;
    const cached = await cache().ensure({ kind: 'url', url, sha256: sha(bytes) }, `sha256:${sha(bytes)}`, dir);
    expect(sha(await readFile(cached))).toBe(sha(bytes));
  });

  it('a server that is down is a transient error naming the URL', async () => {
    images = await mkdtemp(path.join(dir, 'images-'));
    const base = { kind: 'url' as const, url: 'http://127.0.0.1:9/gone.qcow2', sha256: 'a'.repeat(64) };
    const error = await cache()
      .ensure(base, `sha256:${'a'.repeat(64)}`, dir)
      .catch((e: unknown) => e as Error);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toMatch(/download of http:\/\/127\.0\.0\.1:9\/gone\.qcow2 failed: fetch failed/);
  });
});

describe('formatProgress', () => {
  it('says how much of how much, and where a resumed transfer began', () => {
    expect(formatProgress({ url: 'u', received: 3 * 2 ** 20, total: 12 * 2 ** 20, resumedFrom: 0 })).toBe(
      '3.0 MiB of 12 MiB (25%)',
    );
    expect(formatProgress({ url: 'u', received: 2 ** 30, resumedFrom: 512 * 2 ** 20 })).toBe(
      '1.0 GiB, resumed at 512 MiB',
    );
  });
});
