/**
 * Issue 14, item 2: state that heals. A torn lock is taken over; a damaged `current` or
 * `compiled/` is reported once and healed by the next compile; what a killed writer leaves is
 * swept; read-only commands write nothing.
 */
import { createHash } from 'node:crypto';
import { lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { aHostConfig, aProfileDir, cleanup, corral, currentTarget, tempRoot } from '../builders/profile-dir.js';
import { writeFileAtomic } from '../../src/util/atomic-write.js';
import { aReconciledHost, cli } from './world.js';

afterEach(cleanup);

async function aCompiledHost(): Promise<{ root: string; config: string; stateDir: string }> {
  const root = await tempRoot('corral-heal-');
  await aProfileDir(join(root, 'local'), 'web').write();
  const host = aHostConfig(root).source('local', 'local');
  const config = await host.write();
  expect((await cli(['compile', '--config', config])).exitCode).toBe(0);
  return { root, config, stateDir: host.stateDir };
}

/** A pid that runs nowhere: above the kernel's pid_max. */
const DEAD_PID = 4_194_305;

describe('a lock without a live holder is taken over', () => {
  for (const [what, content] of [
    ['empty (torn by a crash)', ''],
    ['garbled', '{"pid": 12'],
    ['JSON that names no holder', '[]'],
  ] as const) {
    it(`${what}: compile takes it over with a warning instead of exit 75 forever`, async () => {
      const h = await aCompiledHost();
      await writeFile(join(h.stateDir, 'lock'), content);
      const r = await corral(['compile', '--config', h.config]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stderr).toContain('taking over a torn lock');
      await expect(lstat(join(h.stateDir, 'lock'))).rejects.toThrow(/ENOENT/);
    });
  }

  it('status shows no holder for a torn lock, and reconcile --wait does not block on it', async () => {
    const h = await aCompiledHost();
    await writeFile(join(h.stateDir, 'lock'), '');
    const status = JSON.parse((await cli(['status', '--json', '--config', h.config])).stdout) as { lock: unknown };
    expect(status.lock).toBeNull();
    const r = await cli(['reconcile', '--once', '--wait', '--config', h.config]);
    expect(r.exitCode, r.stderr).toBe(0);
  });

  it('sweeps what a killed holder left: lock.<token>, atomic-write temp files, a half-swapped current', async () => {
    const h = await aCompiledHost();
    const dead = { pid: DEAD_PID, command: 'compile', token: '0123456789abcdef', host: hostname(), startedAt: 'x' };
    await writeFile(join(h.stateDir, 'lock.0123456789abcdef'), JSON.stringify(dead));
    await writeFile(join(h.stateDir, '.backoff.json.0badf00d.tmp'), '{');
    await symlink('compiled/1', join(h.stateDir, '.current-0badf00d'));
    await mkdir(join(h.stateDir, 'compiled', '.tmp-0badf00d'));
    expect((await cli(['compile', '--config', h.config])).exitCode).toBe(0);
    expect((await readdir(h.stateDir)).sort()).toEqual(['compiled', 'current']);
    expect(await readdir(join(h.stateDir, 'compiled'))).toEqual(['1']);
  });
});

describe('the atomic writer', () => {
  it('removes its temp file when the write itself fails (as on a full disk)', async () => {
    const root = await tempRoot();
    // A value the write rejects stands for ENOSPC: the failure comes after the temp file exists.
    await expect(writeFileAtomic(join(root, 'state.json'), 42 as unknown as string)).rejects.toThrow();
    expect(await readdir(root)).toEqual([]);
  });
});

describe('a damaged current or compiled/ is reported once and healed by compile', () => {
  const damages: [string, (stateDir: string) => Promise<void>][] = [
    ['current is a regular file', async (s) => (await rm(join(s, 'current')), writeFile(join(s, 'current'), 'x'))],
    ['current is a dir', async (s) => (await rm(join(s, 'current')), mkdir(join(s, 'current')))],
    ['current is a symlink loop', async (s) => (await rm(join(s, 'current')), symlink('current', join(s, 'current')))],
    [
      'compiled/ is a file',
      async (s) => (await rm(join(s, 'compiled'), { recursive: true }), writeFile(join(s, 'compiled'), '')),
    ],
    ['view.json is garbled', (s) => writeFile(join(s, 'compiled', '1', 'view.json'), '{"profiles": [')],
  ];
  for (const [what, damage] of damages) {
    it(what, async () => {
      const h = await aCompiledHost();
      await damage(h.stateDir);
      for (const command of ['status', 'plan']) {
        const r = await cli([command, '--config', h.config]);
        expect(r.exitCode, `${command}: ${r.stderr}`).toBe(0);
        expect(r.stderr).not.toContain('internal error');
        if (command === 'status') expect(r.stderr.match(/the stored view is damaged/g)).toHaveLength(1);
      }
      const compile = await cli(['compile', '--config', h.config]);
      expect(compile.exitCode, compile.stderr).toBe(0);
      expect(compile.stderr.match(/the stored view is damaged/g)).toHaveLength(1);
      const target = await currentTarget(h.stateDir);
      expect(target).toMatch(/^compiled\/\d+$/);
      expect(JSON.parse(await readFile(join(h.stateDir, target!, 'view.json'), 'utf8'))).toMatchObject({
        profiles: [{ name: 'web' }],
      });
      const healed = await cli(['status', '--config', h.config]);
      expect(healed.stderr).not.toContain('damaged');
    });
  }
});

/** Every path under dir with its bytes' hash (or link target): any write shows up as a difference. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isSymbolicLink()) out[path] = `-> ${await readlink(path)}`;
    else if (entry.isFile())
      out[path] = `${createHash('sha256')
        .update(await readFile(path))
        .digest('hex')} ${(await lstat(path)).mtimeMs}`;
    else out[path] = 'dir';
  }
  return out;
}

describe('read-only commands write nothing', () => {
  it('plan, status and reconcile --dry-run create no state dir', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'local'), 'web').write();
    const config = await aHostConfig(root).source('local', 'local').write();
    for (const args of [['plan'], ['status'], ['reconcile', '--once', '--dry-run'], ['plan', '--json']]) {
      const r = await cli([...args, '--config', config]);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    expect(await readdir(root)).toEqual(['corral.yaml', 'local']);
  });

  it('never advance the memory backend: a build due to finish stays as it was saved', async () => {
    const h = await aReconciledHost();
    const file = join(h.stateDir, 'memory-hypervisor.json');
    const state = JSON.parse(await readFile(file, 'utf8')) as { guests: object[] };
    state.guests.push({
      name: 'ci-rebuild-web@20260101T000000Z-deadbeef',
      state: 'running',
      meta: {
        profile: 'web',
        gen: '20260101T000000Z-deadbeef',
        inputsHash: `sha256:${'d'.repeat(64)}`,
        baseVersion: `sha256:${'b'.repeat(64)}`,
        createdAt: '2026-01-01T00:00:00.000Z',
        owner: 'a-process-long-gone',
      },
      finishAt: '2026-01-01T00:00:01.000Z',
      outcome: 'succeed',
      disks: [],
      console: [],
    });
    await writeFile(file, JSON.stringify(state));
    await rm(join(h.root, 'usb'), { recursive: true }); // a held source too: plan must not record it
    const before = await snapshot(h.stateDir);
    for (const args of [['plan'], ['status'], ['reconcile', '--once', '--dry-run'], ['status', '--json']]) {
      const r = await cli([...args, '--config', h.config]);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(0);
    }
    expect(await snapshot(h.stateDir)).toEqual(before);
  });
});
