/** Build records: written whole, listed by generation, pruned by count but never while their guest lives. */
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildRecords, manifestDigest, type Manifest } from '../../src/state/build-records.js';
import { oldGenerations } from '../../src/state/compiled-store.js';

let stateDir: string;
beforeAll(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'corral-records-'));
});
afterAll(async () => rm(stateDir, { recursive: true, force: true }));

function manifest(day: number, verdict: 'ok' | 'failed' | 'running', profile = 'web'): Manifest {
  const gen = `202611${String(day).padStart(2, '0')}T120000Z-aaaaaaaa`;
  return {
    format_version: 1,
    template: `ci-template-${profile}@${gen}`,
    rebuild: `ci-rebuild-${profile}@${gen}`,
    gen,
    profile: {
      name: profile,
      source: 's',
      dir: '/p',
      file: '/p/profile.yaml',
      generation: day,
      inputsHash: 'sha256:1',
    },
    reason: 'no template yet',
    inputs: [{ path: 'provision/provision.sh', sha256: 'a'.repeat(64), mode: '0755', executable: true }],
    base: { kind: 'file', file: '/p/base.img', version: `sha256:${'b'.repeat(64)}` },
    guest: { cpus: 1, memoryMiB: 128 },
    host: 'h',
    corral: { version: '0.1.0' },
    startedAt: `2026-11-${String(day).padStart(2, '0')}T12:00:00.000Z`,
    result: { verdict },
  };
}

describe('BuildRecords', () => {
  it('the digest covers what went in, not how the build ended', async () => {
    const m = manifest(1, 'running');
    const running = manifestDigest(m);
    expect(manifestDigest({ ...m, result: { verdict: 'ok', durationMs: 5 } })).toBe(running);
    expect(manifestDigest({ ...m, inputs: [] })).not.toBe(running);
  });

  it('lists two builds of the same second in the order they started, not by their inputs hash', async () => {
    const records = new BuildRecords(await mkdtemp(path.join(stateDir, 'same-second-')));
    // One second, two builds: the later one's hash sorts first.
    const gen = (hash: string) => `20261127T215700Z-${hash}`;
    const named = (m: Manifest, hash: string, startedAt: string): Manifest => ({
      ...m,
      gen: gen(hash),
      template: `ci-template-web@${gen(hash)}`,
      rebuild: `ci-rebuild-web@${gen(hash)}`,
      startedAt,
    });
    const first = named(manifest(27, 'ok'), 'ffffffff', '2026-11-27T21:57:00.100Z');
    const second = named(manifest(27, 'failed'), '00000000', '2026-11-27T21:57:00.900Z');
    await records.write(second);
    await records.write(first);
    expect((await records.list('web')).map((m) => m.result.verdict)).toEqual(['ok', 'failed']);
  });

  it('lists by generation and prunes failed and retired records beyond their counts, never a live one', async () => {
    const records = new BuildRecords(stateDir);
    const all = [
      manifest(1, 'ok'),
      manifest(2, 'failed'),
      manifest(3, 'ok'),
      manifest(4, 'failed'),
      manifest(5, 'failed'),
      manifest(6, 'ok'),
      manifest(7, 'running'),
      manifest(2, 'failed', 'other'),
    ];
    for (const m of [...all].reverse()) await records.write(m);
    expect((await records.list('web')).map((m) => m.gen.slice(6, 8))).toEqual([
      '01',
      '02',
      '03',
      '04',
      '05',
      '06',
      '07',
    ]);
    const live = new Set([all[0]!.template, all[5]!.template]); // an old template a runner still uses, and the newest
    const prunable = await records.prunable({ keepFailed: 1, keepOk: 0, existing: live });
    expect(prunable.map((d) => path.basename(d)).sort()).toEqual(
      [all[1]!.template, all[2]!.template, all[3]!.template].sort(),
    );
  });
});

describe('oldGenerations', () => {
  it('names compiled generations beyond the five kept besides the current one', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'corral-gens-'));
    for (let g = 1; g <= 8; g++) await mkdir(path.join(dir, 'compiled', String(g)), { recursive: true });
    await symlink('compiled/8', path.join(dir, 'current'));
    expect((await oldGenerations(dir)).map((d) => path.basename(d))).toEqual(['2', '1']);
    await rm(dir, { recursive: true, force: true });
  });
});
