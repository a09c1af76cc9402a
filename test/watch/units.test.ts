import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FSWatcher } from 'chokidar';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { expandGlob } from '../../src/sources/enumerate.js';
import { AbsenceTracker } from '../../src/watch/absence.js';
import { MountWatch } from '../../src/watch/mounts.js';
import { createQueues, StoppedError } from '../../src/watch/queues.js';
import { isOnPattern, matchesPattern, relevance, staticRoot, watchTargets } from '../../src/watch/targets.js';
import { WatchSet } from '../../src/watch/watch-set.js';
import { waitFor } from './harness.js';

const temps: string[] = [];
afterEach(async () => {
  for (const t of temps.splice(0)) await rm(t, { recursive: true, force: true });
});
async function temp(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'corral-watch-unit-'));
  temps.push(dir);
  return dir;
}

describe('AbsenceTracker', () => {
  const configured = () => true;
  const known = (...dirs: string[]) => dirs.map((dir) => ({ dir, source: 's' }));

  it('holds a known dir for the grace period, then lets it go', async () => {
    const t = new AbsenceTracker(120_000);
    const both = known('/mnt/a/p', '/src');
    expect((await t.observe(both, new Set(['/mnt/a/p', '/src']), configured, 0)).holding).toEqual([]);
    const gone = await t.observe(both, new Set(['/src']), configured, 1000);
    expect(gone).toMatchObject({ holding: ['/mnt/a/p'], newlyMissing: ['/mnt/a/p'], nextExpiry: 121_000 });
    expect(gone.held[0]?.graceUntil).toEqual(new Date(121_000));
    expect((await t.observe(both, new Set(['/src']), configured, 120_999)).holding).toEqual(['/mnt/a/p']);
    expect(await t.observe(both, new Set(['/src']), configured, 121_000)).toMatchObject({
      holding: [],
      expired: ['/mnt/a/p'],
    });
    // Once a view without it is accepted, the dir is no longer known.
    expect((await t.observe(known('/src'), new Set(['/src']), configured, 200_000)).absentSince).toEqual({});
  });

  it('restarts the clock when the dir comes back in between', async () => {
    const t = new AbsenceTracker(10);
    await t.observe(known('/a'), new Set(), configured, 0);
    await t.observe(known('/a'), new Set(['/a']), configured, 5);
    expect(await t.observe(known('/a'), new Set(), configured, 12)).toMatchObject({
      holding: ['/a'],
      newlyMissing: ['/a'],
    });
  });

  it('gives no grace to a source removed from the host config', async () => {
    const t = new AbsenceTracker(120_000);
    expect((await t.observe(known('/a'), new Set(), () => false, 0)).holding).toEqual([]);
  });
});

describe('watch targets', () => {
  it('matches paths on the way to and inside glob sources', () => {
    const pattern = '/mnt/*/corral/profiles';
    expect(staticRoot(pattern)).toEqual({ root: '/mnt', rest: ['*', 'corral', 'profiles'] });
    expect(isOnPattern('/mnt/usb1', pattern)).toBe(true);
    expect(isOnPattern('/mnt/usb1/corral/profiles/p/profile.yaml', pattern)).toBe(true);
    expect(isOnPattern('/mnt/usb1/other', pattern)).toBe(false);
    expect(isOnPattern('/mnt/.hidden/corral', pattern)).toBe(false);
    expect(matchesPattern('/mnt/usb1/corral/profiles', pattern)).toBe(true);
    expect(matchesPattern('/mnt/usb1/corral', pattern)).toBe(false);
    const relevant = relevance([{ name: 's', glob: pattern }], '/etc/corral/config.yaml');
    expect(relevant('/etc/corral/config.yaml')).toBe('config');
    expect(relevant('/etc/corral/other.yaml')).toBeUndefined();
  });

  it('watches source dirs deep, glob roots to the match depth, and missing dirs through an ancestor', async () => {
    const root = await temp();
    await mkdir(join(root, 'mnt', 'a', 'corral', 'profiles'), { recursive: true });
    await mkdir(join(root, 'src'));
    const targets = await watchTargets(
      [
        { name: 'src', path: join(root, 'src') },
        { name: 'later', path: join(root, 'not', 'yet') },
        { name: 'parts', glob: join(root, 'mnt', '*', 'corral', 'profiles') },
      ],
      join(root, 'corral.yaml'),
      // What this pass's enumeration found: the glob is not expanded a second time.
      [join(root, 'src'), join(root, 'mnt', 'a', 'corral', 'profiles')],
    );
    expect(targets).toEqual(
      [
        { dir: root, depth: 0 },
        { dir: join(root, 'mnt'), depth: 2 },
        { dir: join(root, 'mnt', 'a', 'corral', 'profiles'), depth: 8 },
        { dir: join(root, 'src'), depth: 8 },
      ].sort((a, b) => a.dir.localeCompare(b.dir)),
    );
  });

  it('agrees with the source listing on a glob with an unbalanced "[": both take it literally', async () => {
    const root = await temp();
    const pattern = join(root, '[x', 'p');
    await mkdir(join(root, '[x', 'p'), { recursive: true });
    const sources = [{ name: 'odd', glob: pattern }];
    expect(await expandGlob(pattern)).toEqual([join(root, '[x', 'p')]);
    // The watch's event filter used to throw "Unterminated character class" here.
    expect(relevance(sources)(join(root, '[x', 'p', 'prof', 'profile.yaml'))).toBe('change');
    expect(relevance(sources)(join(root, 'x', 'p'))).toBeUndefined();
    expect(matchesPattern(join(root, '[x', 'p'), pattern)).toBe(true);
  });
});

describe('StoppableQueue', () => {
  const gate = () => {
    let open = () => undefined as void;
    const opened = new Promise<void>((r) => (open = r));
    return { open, opened };
  };

  it('build queue: running work finishes, waiting work is dropped without a rejection anyone must catch', async () => {
    const { builds } = createQueues({ builds: 1, clones: 1 });
    const first = gate();
    const started: string[] = [];
    // Like apply: one Promise.all over the builds, with no handler attached yet.
    const all = Promise.all(
      ['a', 'b', 'c'].map((name) =>
        builds.add(async () => (started.push(name), name === 'a' && (await first.opened), name)),
      ),
    );
    await new Promise((r) => setTimeout(r, 10));
    builds.stop();
    const later = builds.add(async () => started.push('d'));
    first.open();
    await builds.onIdle();
    expect(started).toEqual(['a']);
    const settled = await Promise.race([
      all.then(() => 'settled'),
      later.then(() => 'settled'),
      new Promise((r) => setTimeout(() => r('pending'), 50)),
    ]);
    expect(settled).toBe('pending');
  });

  it('runner queue: waiting and later work rejects with StoppedError, so the pass awaiting it ends', async () => {
    const { clones } = createQueues({ builds: 1, clones: 1 });
    const first = gate();
    const running = clones.add(async () => first.opened.then(() => 'done'), { throwOnTimeout: true });
    const waiting = clones.add(async () => 'never', { throwOnTimeout: true });
    clones.stop();
    first.open();
    expect(await running).toBe('done');
    await expect(waiting).rejects.toBeInstanceOf(StoppedError);
    await expect(clones.add(async () => 'never', { throwOnTimeout: true })).rejects.toBeInstanceOf(StoppedError);
  });
});

describe('MountWatch', () => {
  it('calls back when the mount table changes, not when it stays the same', async () => {
    const file = join(await temp(), 'mountinfo');
    await writeFile(file, '22 1 0:21 / / rw - ext4 /dev/sda1 rw\n');
    let changes = 0;
    const watch = new MountWatch({ file, intervalMs: 20, onChange: () => changes++ });
    await watch.start();
    try {
      await new Promise((r) => setTimeout(r, 100));
      expect(changes).toBe(0);
      // Whole, as the kernel presents the table: writeFile truncates first, and a look between the
      // truncation and the write would see two changes.
      await writeFile(
        `${file}.new`,
        '22 1 0:21 / / rw - ext4 /dev/sda1 rw\n40 22 8:17 / /mnt/usb1 rw - ext4 /dev/sdb1 rw\n',
      );
      await rename(`${file}.new`, file);
      await waitFor(() => changes >= 1, 'the change');
      await new Promise((r) => setTimeout(r, 100));
      expect(changes).toBe(1);
    } finally {
      watch.stop();
    }
  });
});

describe('WatchSet', () => {
  it('falls back to polling when the watcher runs out of inotify watches, and says so', async () => {
    const dir = await temp();
    const created: FSWatcher[] = [];
    const lines: { msg: string; pollIntervalMs?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const events: string[] = [];
    let fellBack = 0;
    const set = new WatchSet({
      log,
      ignored: () => false,
      onEvent: (_event, path) => events.push(path),
      onFallback: () => fellBack++,
      pollIntervalMs: 50,
      createWatcher: (options) => {
        const w = new FSWatcher(options);
        created.push(w);
        return w;
      },
    });
    try {
      await set.update([{ dir, depth: 1 }]);
      expect(set.mode).toBe('events');
      created[0]!.emit(
        'error',
        Object.assign(new Error('ENOSPC: System limit for number of file watchers reached'), { code: 'ENOSPC' }),
      );
      await waitFor(() => fellBack === 1, 'the fallback');
      expect(set.mode).toBe('polling');
      expect(created).toHaveLength(2);
      expect(created[1]!.options.usePolling).toBe(true);
      expect(lines.some((l) => /falling back to polling/.test(l.msg))).toBe(true);
      await writeFile(join(dir, 'profile.yaml'), 'runners: 1\n');
      await waitFor(() => events.includes(join(dir, 'profile.yaml')), 'an event while polling', 10_000);
    } finally {
      await set.close();
    }
  });
});
