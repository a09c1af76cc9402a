/**
 * Staging dirs of pulls (src/gc/staging.ts): a dir a live pull holds is never touched, whatever its
 * age; an interrupted pull's dir stays resumable for gc.keepInterruptedPulls, or as long as a
 * profile wants its image; an abandoned one goes, dir and all. And a base a running pull just
 * landed is not collected before that pull has defined the template on it.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { collectGarbage, type GcDeps } from '../../src/gc/collect.js';
import { abandonedStaging, type StagingEntry } from '../../src/gc/staging.js';
import { MemoryHypervisor } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { adoptBase, BaseCache, stagingDir, type CachedBase } from '../../src/images/base-cache.js';
import { BuildRecords } from '../../src/state/build-records.js';
import { lockStaging } from '../../src/state/staging-lock.js';
import { aProfile } from '../builders/guests.js';
import { aHostConfig } from '../builders/world.js';

const HOUR = 3_600_000;
const hex = (c: string) => c.repeat(64);
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('abandonedStaging (the decision)', () => {
  const NOW = 100 * HOUR;
  const entry = (over: Partial<StagingEntry>): StagingEntry => ({
    path: `/images/staging/${over.hex ?? hex('a')}`,
    hex: hex('a'),
    bytes: 100,
    newestMs: NOW - 48 * HOUR,
    ...over,
  });
  const decide = (entries: StagingEntry[], wanted: string[] = []) =>
    abandonedStaging({ entries, wanted: new Set(wanted), now: NOW, keepMs: 24 * HOUR }).map((r) => r.path);

  it('removes only what no live pull holds, no profile wants, and nothing touched for the bound', () => {
    const old = entry({ hex: hex('a') });
    const held = entry({ hex: hex('b'), heldBy: { pid: 1, command: 'pull x', sinceMs: NOW - 72 * HOUR } });
    const wanted = entry({ hex: hex('c') });
    const recent = entry({ hex: hex('d'), newestMs: NOW - 23 * HOUR });
    expect(decide([old, held, wanted, recent], [hex('c')])).toEqual([old.path]);
  });
});

interface Fixture {
  imagesDir: string;
  deps: GcDeps;
  profiles: ReturnType<ReturnType<typeof aProfile>['build']>[];
}

async function fixture(): Promise<Fixture> {
  const root = await mkdtemp(path.join(tmpdir(), 'corral-staging-'));
  dirs.push(root);
  const config = aHostConfig(path.join(root, 'state'), { imagesDir: path.join(root, 'images') });
  await mkdir(config.stateDir, { recursive: true });
  const clock = () => new Date();
  const bases = new BaseCache({
    imagesDir: config.imagesDir,
    run: () => Promise.reject(new Error('no commands here')),
    clock,
  });
  const f: Fixture = { imagesDir: config.imagesDir, profiles: [], deps: undefined as unknown as GcDeps };
  f.deps = {
    hypervisor: new MemoryHypervisor({ prefix: 'ci', clock }),
    bases,
    records: new BuildRecords(config.stateDir),
    stateDir: config.stateDir,
    prefix: 'ci',
    settings: config.gc,
    clock,
    log: pino({ level: 'silent' }),
    profiles: () => f.profiles,
  };
  return f;
}

/** A staging dir as a pull leaves it: sparse files and a journal, last written `ageMs` ago. */
async function staged(imagesDir: string, key: string, ageMs: number): Promise<string> {
  const dir = stagingDir(imagesDir, key);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'disk'), Buffer.alloc(64 * 1024, 1));
  await writeFile(path.join(dir, 'journal'), 'sha256:… disk 0\n');
  const t = new Date(Date.now() - ageMs);
  for (const f of ['disk', 'journal']) await utimes(path.join(dir, f), t, t);
  await utimes(dir, t, t);
  return dir;
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

/** A pid that certainly runs no more: a child that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

describe('collectGarbage and staging dirs', () => {
  it('keeps a dir a live pull holds (even old), a recent one and a wanted one; removes an abandoned one', async () => {
    const f = await fixture();
    const held = await staged(f.imagesDir, hex('a'), 72 * HOUR);
    const lock = await lockStaging(held, 'pull test/held');
    const recent = await staged(f.imagesDir, hex('b'), 1 * HOUR);
    const wanted = await staged(f.imagesDir, hex('c'), 72 * HOUR);
    const abandoned = await staged(f.imagesDir, hex('d'), 25 * HOUR);
    // Killed mid-pull: its lock names a process that is gone; it counts as abandoned.
    const killed = await staged(f.imagesDir, hex('e'), 30 * HOUR);
    await writeFile(
      path.join(killed, 'lock'),
      JSON.stringify({ pid: await deadPid(), command: 'pull x', token: 'f'.repeat(16), host: hostname() }),
    );
    const then = new Date(Date.now() - 30 * HOUR);
    for (const p of [path.join(killed, 'lock'), killed]) await utimes(p, then, then);
    f.profiles = [
      aProfile('f')
        .following('127.0.0.1:5000/ci/f:main', `sha256:${hex('c')}`)
        .build(),
    ];

    const dry = await collectGarbage(f.deps, { dryRun: true });
    expect(dry.files.map((x) => path.basename(x.path)).sort()).toEqual([hex('d'), hex('e')]);
    expect(await exists(abandoned)).toBe(true);

    const report = await collectGarbage(f.deps);
    expect(report.files.map((x) => [path.basename(x.path), x.reason])).toEqual(
      expect.arrayContaining([
        [hex('d'), 'staging dir of an interrupted pull no profile wants, untouched for 25 h'],
        [hex('e'), 'staging dir of an interrupted pull no profile wants, untouched for 30 h'],
      ]),
    );
    expect(report.freedBytes).toBeGreaterThan(2 * 64 * 1024 - 1);
    expect((await readdir(stagingDir(f.imagesDir, ''))).sort()).toEqual([hex('a'), hex('b'), hex('c')]);
    // Nothing inside the live pull's dir was touched, file by file or otherwise.
    expect((await readdir(held)).sort()).toEqual(['disk', 'journal', 'lock']);
    expect(await exists(recent)).toBe(true);
    expect(await exists(wanted)).toBe(true);

    // The pull ends without landing (killed by a signal, say): its dir ages out like any other.
    await lock.release();
    f.profiles = [];
    const later = await collectGarbage({ ...f.deps, clock: () => new Date(Date.now() + 2 * 24 * HOUR) });
    expect(later.files.map((x) => path.basename(x.path)).sort()).toEqual([hex('a'), hex('b'), hex('c')]);
    expect(await readdir(stagingDir(f.imagesDir, ''))).toEqual([]);
  });

  it('a pull that starts while gc removes its old dir is refused (transient), never half-deleted', async () => {
    const f = await fixture();
    const dir = await staged(f.imagesDir, hex('a'), 48 * HOUR);
    const gcLock = await lockStaging(dir, 'gc');
    await expect(lockStaging(dir, 'pull test/late')).rejects.toMatchObject({
      name: 'TransientError',
      message: expect.stringMatching(/staging dir .* is locked by pid \d+ \(corral gc, since /),
    });
    await gcLock.release();
  });

  it('spares a base landed by a pull still running until the pull has ended', async () => {
    const f = await fixture();
    const dir = await staged(f.imagesDir, hex('a'), 0);
    const lock = await lockStaging(dir, 'pull test/template');
    await new Promise((r) => setTimeout(r, 20));
    // The pull moves its base into the cache, but has not defined the template on it yet.
    const base = path.join(f.imagesDir, 'base', 'sha256', `${hex('b')}.qcow2`);
    await mkdir(path.dirname(base), { recursive: true });
    await writeFile(base, 'base');
    await writeFile(base.replace(/qcow2$/, 'json'), '{}');
    expect((await collectGarbage(f.deps)).files).toEqual([]);
    await lock.release();
    const after = await collectGarbage(f.deps);
    expect(after.files.map((x) => path.basename(x.path)).sort()).toEqual([`${hex('b')}.json`, `${hex('b')}.qcow2`]);
  });
});

describe('a base carried by a pulled template', () => {
  it('lands with a descriptor, is kept while a template names it, and goes with its descriptor after', async () => {
    const f = await fixture();
    const version = `sha256:${hex('9')}`;
    const staged = path.join(await staged_(f.imagesDir), 'base');
    await writeFile(staged, 'qcow2 bytes');
    const cachedAt = new Date().toISOString();
    const landed = await adoptBase(f.imagesDir, version, staged, {
      reference: `127.0.0.1:5000/ci/web@sha256:${hex('1')}`,
      template: 'ci-template-web@20261127T000000Z-11111111',
      cachedAt,
    });
    const descriptor = JSON.parse(await readFile(landed.replace(/qcow2$/, 'json'), 'utf8')) as CachedBase;
    expect(descriptor).toMatchObject({
      version,
      source: {
        kind: 'oci',
        reference: `127.0.0.1:5000/ci/web@sha256:${hex('1')}`,
        template: 'ci-template-web@20261127T000000Z-11111111',
      },
      cachedAt,
      sourceFormat: 'qcow2',
      bytes: 11,
      // No digest recorded by the build host: computed from the bytes.
      digest: `sha256:${createHash('sha256').update('qcow2 bytes').digest('hex')}`,
    });
    expect(await f.deps.bases.describe(version)).toEqual(descriptor);

    // The pulled template names it in its metadata (and its disk's backing chain would): kept.
    const hv = new MemoryHypervisor({
      prefix: 'ci',
      clock: () => new Date(),
      initial: {
        guests: [
          {
            name: 'ci-template-web@20261127T000000Z-11111111',
            state: 'shutoff',
            meta: {
              profile: 'web',
              gen: '20261127T000000Z-11111111',
              inputsHash: `sha256:${hex('1')}`,
              baseVersion: version,
              createdAt: cachedAt,
            },
            disks: [],
            console: [],
          },
        ],
        backing: {},
      },
    });
    expect((await collectGarbage({ ...f.deps, hypervisor: hv })).files).toEqual([]);
    await hv.destroy('ci-template-web@20261127T000000Z-11111111');
    const report = await collectGarbage({ ...f.deps, hypervisor: hv });
    expect(report.files.map((x) => [path.basename(x.path), x.reason]).sort()).toEqual([
      [`${hex('9')}.json`, 'base version no template, runner or build uses'],
      [`${hex('9')}.qcow2`, 'base version no template, runner or build uses'],
    ]);
  });
});

async function staged_(imagesDir: string): Promise<string> {
  const dir = stagingDir(imagesDir, hex('1'));
  await mkdir(dir, { recursive: true });
  return dir;
}
