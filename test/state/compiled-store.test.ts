/** The compiled view on disk: generations, the `current` symlink swap, pruning (docs/design.md, "Files": state dir). */
import { lstat, readFile, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CompiledView } from '../../src/sources/view.js';
import { KEEP_GENERATIONS, currentGeneration, readCurrentView, storeView } from '../../src/state/compiled-store.js';
import {
  aHostConfig,
  aProfileDir,
  cleanup,
  corral,
  corralInProcess,
  currentTarget,
  refreshConfig,
  stackLines,
  tempRoot,
} from '../builders/profile-dir.js';

afterAll(cleanup);

/** Two profiles in one source, a host config, and the paths a test pokes at. */
async function twoProfiles() {
  const root = await tempRoot();
  const web = await aProfileDir(join(root, 'src'), 'web').kernel().write();
  const api = await aProfileDir(join(root, 'src'), 'api').write();
  const host = aHostConfig(root).source('local', 'src');
  const config = await host.write();
  return { root, web, api, config, stateDir: host.stateDir };
}

const byName = (view: CompiledView | undefined) => new Map(view?.profiles.map((p) => [p.name, p.inputsHash]));

/** Entries in the state dir and compiled/ that are neither a generation, `current`, nor `lock`. */
async function leftovers(stateDir: string): Promise<string[]> {
  const top = (await readdir(stateDir)).filter((n) => !['compiled', 'current', 'lock'].includes(n));
  const compiled = (await readdir(join(stateDir, 'compiled'))).filter((n) => !/^\d+$/.test(n));
  return [...top, ...compiled.map((n) => `compiled/${n}`)];
}

describe('corral compile (CLI)', () => {
  it('twice on unchanged inputs → the same generation, reported unchanged; an edit → a new one', async () => {
    const w = await twoProfiles();
    const first = await corral(['compile', '--config', w.config]);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^generation 1 sha256:[0-9a-f]{64}: 2 profile\(s\)\n$/);
    const before = await readCurrentView(w.stateDir);

    const again = await corral(['compile', '--config', w.config]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^generation 1 sha256:[0-9a-f]{64} \(unchanged\): 2 profile\(s\)\n$/);
    expect(await readdir(join(w.stateDir, 'compiled'))).toEqual(['1']);

    await writeFile(join(w.web.dir, 'provision', 'provision.sh'), '#!/bin/sh\necho changed\n');
    const edited = await corral(['compile', '--json', '--config', w.config]);
    expect(edited.exitCode, edited.stderr).toBe(0);
    expect(JSON.parse(edited.stdout)).toMatchObject({ generation: 2, changed: true, profiles: 2 });
    const after = await readCurrentView(w.stateDir);
    expect(byName(after).get('api')).toBe(byName(before).get('api'));
    expect(byName(after).get('web')).not.toBe(byName(before).get('web'));
    expect(await currentTarget(w.stateDir)).toBe('compiled/2');
    for (const r of [first, again, edited]) expect(stackLines(r.stderr)).toEqual([]);
  });

  it('a failed compile says why, exits 1 and leaves current on the last good view', async () => {
    const w = await twoProfiles();
    expect((await refreshConfig(w.config)).ok).toBe(true);
    const good = await readFile(join(w.stateDir, 'current', 'view.json'), 'utf8');
    await writeFile(w.web.file, 'runners: 1\nbase: { file: nope.img }\n');
    const failed = await corral(['compile', '--config', w.config]);
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toContain('corral compile: compile failed; generation 1 stays current');
    expect(failed.stderr).toContain(`${w.web.file}#/base/file: not found: nope.img`);
    expect(await currentTarget(w.stateDir)).toBe('compiled/1');
    expect(await readFile(join(w.stateDir, 'current', 'view.json'), 'utf8')).toBe(good);
    expect(await leftovers(w.stateDir)).toEqual([]);
  });

  it('a failed first compile says no view is current yet and creates none', async () => {
    const w = await twoProfiles();
    await writeFile(w.api.file, 'runners: x\n');
    const failed = await corralInProcess(['compile', '--config', w.config]);
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toContain('compile failed; no view is current yet');
    expect(await currentTarget(w.stateDir)).toBeUndefined();
  });

  it('fails fast with exit 75 when another process holds the state-dir lock', async () => {
    const w = await twoProfiles();
    const { acquireLock } = await import('../../src/state/lock.js');
    const { pino } = await import('pino');
    const lock = await acquireLock(w.stateDir, { command: 'watch', log: pino({ level: 'silent' }) });
    try {
      const busy = await corral(['compile', '--config', w.config]);
      expect(busy.exitCode).toBe(75);
      expect(busy.stderr).toContain(`is locked by pid ${process.pid} (corral watch`);
      expect(busy.stderr.trim().split('\n')).toHaveLength(1);
    } finally {
      await lock.release();
    }
  });
});

describe('compiled store', () => {
  it('current is a relative symlink swapped by rename; nothing temporary is left behind', async () => {
    const w = await twoProfiles();
    for (let i = 0; i < 3; i++) {
      await writeFile(join(w.api.dir, 'base.img'), `base v${i}`);
      const r = await refreshConfig(w.config);
      expect(r.changed).toBe(true);
      const link = join(w.stateDir, 'current');
      expect((await lstat(link)).isSymbolicLink()).toBe(true);
      expect(await readlink(link)).toBe(`compiled/${i + 1}`);
      expect(await currentGeneration(w.stateDir)).toBe(i + 1);
      expect(await leftovers(w.stateDir)).toEqual([]);
      const view = JSON.parse(await readFile(join(link, 'view.json'), 'utf8')) as CompiledView;
      expect(view.generation).toBe(i + 1);
    }
  });

  it('readers polling during swaps always see one whole view', async () => {
    const w = await twoProfiles();
    await refreshConfig(w.config);
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const view = await readCurrentView(w.stateDir); // throws on a half-written file
        expect(view?.profiles).toHaveLength(2);
        reads++;
        await new Promise((r) => setImmediate(r));
      }
    })();
    for (let i = 0; i < 10; i++) {
      await writeFile(join(w.api.dir, 'base.img'), `base v${i}`);
      expect((await refreshConfig(w.config)).changed).toBe(true);
    }
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(0);
  });

  it(`keeps the current generation plus ${KEEP_GENERATIONS} older ones and prunes the rest`, async () => {
    const w = await twoProfiles();
    const total = KEEP_GENERATIONS + 4;
    for (let i = 0; i < total; i++) {
      await writeFile(join(w.api.dir, 'base.img'), `base v${i}`);
      await refreshConfig(w.config);
    }
    const kept = (await readdir(join(w.stateDir, 'compiled'))).map(Number).sort((a, b) => a - b);
    expect(kept).toEqual(Array.from({ length: KEEP_GENERATIONS + 1 }, (_, i) => total - KEEP_GENERATIONS + i));
    expect(await currentGeneration(w.stateDir)).toBe(total);
  });

  it('storing the same hash keeps the generation; generation numbers never go back', async () => {
    const stateDir = await tempRoot();
    const view = { format_version: 1 as const, hash: 'sha256:aa', profiles: [], masked: [] };
    const now = new Date('2026-11-24T10:00:00Z');
    expect((await storeView(stateDir, view, now)).view.generation).toBe(1);
    const same = await storeView(stateDir, view, new Date('2026-11-24T11:00:00Z'));
    expect(same.changed).toBe(false);
    expect(same.view.compiledAt).toBe(now.toISOString());
    expect((await storeView(stateDir, { ...view, hash: 'sha256:bb' }, now)).view.generation).toBe(2);
    // Switching back to an earlier view is a new generation, not a step back.
    const back = await storeView(stateDir, view, now);
    expect(back).toMatchObject({ changed: true, view: { generation: 3, hash: 'sha256:aa' } });
  });
});
