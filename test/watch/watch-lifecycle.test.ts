import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  makeFixture,
  runCli,
  runners,
  settled,
  startWatch,
  stopWatch,
  waitFor,
  writeProfile,
  useWatchFixtures,
} from './harness.js';

/** Root with unshare and nsenter: the mount test makes a private mount namespace. */
function canMount(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('unshare', ['--mount', 'true'], { stdio: 'ignore' });
    execFileSync('nsenter', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const { defer, setup } = useWatchFixtures();

describe('corral watch: sources, signals, lock (real chokidar, memory backend)', { timeout: 180_000 }, () => {
  beforeAll(assertBuilt);

  it('picks up a source dir that appears under a glob root that did not exist', async () => {
    const fx = await makeFixture();
    defer(fx.cleanup);
    await writeProfile(fx.src, 'p1', 2);
    await writeFile(
      fx.config,
      `builtinProfiles: false\nhypervisor: memory\nsources:\n  - {name: test, path: src}\n  - {name: parts, glob: mnt/*/corral/profiles}\n`,
    );
    const w = startWatch(fx);
    defer(() => stopWatch(w));
    await settled(fx, w, { p1: 2 });
    // Like a partition mounted later: the whole tree appears, written piece by piece.
    await writeProfile(join(fx.root, 'mnt', 'usb1', 'corral', 'profiles'), 'p2', 2);
    await settled(fx, w, { p1: 2, p2: 2 });
  });

  it.skipIf(!canMount())(
    'notices a partition mounted over an existing dir under a glob root (mount table)',
    async () => {
      const fx = await makeFixture();
      defer(fx.cleanup);
      await writeProfile(fx.src, 'p1', 1);
      await writeFile(
        fx.config,
        `builtinProfiles: false\nhypervisor: memory\nsources:\n  - {name: test, path: src}\n  - {name: parts, glob: mnt/*/corral/profiles}\n`,
      );
      const mountpoint = join(fx.root, 'mnt', 'usb1');
      await mkdir(mountpoint, { recursive: true });
      const partition = join(fx.root, 'partition');
      await writeProfile(join(partition, 'corral', 'profiles'), 'p2', 2);
      // The watch gets a private mount namespace; the "partition" is bind-mounted inside it only.
      const w = startWatch(fx, [], {}, ['unshare', '--mount', '--propagation', 'private']);
      defer(() => stopWatch(w));
      await settled(fx, w, { p1: 1 });
      const mounted = Date.now();
      execFileSync('nsenter', ['-t', String(w.child.pid), '-m', 'mount', '--bind', partition, mountpoint]);
      await settled(fx, w, { p1: 1, p2: 2 });
      expect(Date.now() - mounted).toBeLessThan(45_000); // the resync is 60 s away
      expect(w.passesSince(mounted, 'mounts').length).toBeGreaterThan(0);
    },
  );

  it('keeps the profiles of a vanished source dir for the grace period, then drops them', async () => {
    const fx = await makeFixture();
    defer(fx.cleanup);
    await writeFile(
      fx.config,
      `builtinProfiles: false\nhypervisor: memory\nsources:\n  - {name: test, path: src}\n  - {name: usb, path: usb}\nwatch: {absentGrace: 3s}\n`,
    );
    await writeProfile(fx.src, 'p1', 1);
    await writeProfile(join(fx.root, 'usb'), 'p2', 2);
    const w = startWatch(fx);
    defer(() => stopWatch(w));
    await settled(fx, w, { p1: 1, p2: 2 });
    const gone = Date.now();
    await rename(join(fx.root, 'usb'), join(fx.root, 'usb-unmounted'));
    const warning = await waitFor(
      () => w.logs.find((l) => l.time >= gone && l.msg.startsWith('source dirs are gone')),
      'the absence warning',
    );
    const since = Date.parse((warning.absentSince as Record<string, string>)[join(fx.root, 'usb')] ?? '');
    expect(since).toBeGreaterThanOrEqual(gone);
    await waitFor(async () => (await runners(fx, 'p2')) === 0, 'p2 runners gone after the grace period');
    // Judged on the watch's own clock, so a slow machine cannot blur it: nothing went before the grace ended.
    const destroyed = await waitFor(() => {
      const lines = w.logs.filter((l) => l.msg === 'destroy-runner done' && l.profile === 'p2');
      return lines.length === 2 && lines;
    }, 'the two destroy-runner lines');
    for (const d of destroyed) expect(d.time).toBeGreaterThanOrEqual(since + 3000);
    expect(await runners(fx, 'p1')).toBe(1);
  });

  it('reloads on SIGHUP and when the host config file changes', async () => {
    const { fx, w } = await setup();
    await settled(fx, w, { p1: 2 });
    const hup = Date.now();
    w.child.kill('SIGHUP');
    await waitFor(() => w.passesSince(hup, 'reload').length > 0, 'a reload pass');
    await waitFor(() => w.logs.some((l) => l.time >= hup && l.msg === 'host config reloaded'), 'the reload');
    await writeProfile(join(fx.root, 'more'), 'p4', 1);
    await writeFile(
      fx.config,
      `builtinProfiles: false\nhypervisor: memory\nsources:\n  - {name: test, path: src}\n  - {name: more, path: more}\n`,
    );
    await settled(fx, w, { p1: 2, p4: 1 });
    await writeFile(fx.config, `builtinProfiles: false\nnot-a-setting: 1\n`);
    await waitFor(
      () => w.logs.some((l) => l.msg === 'the host config is invalid; keeping the previous one'),
      'the rejection',
    );
    expect(await runners(fx, 'p4')).toBe(1);
  });

  it('on SIGTERM abandons the running build, releases the lock and exits 0; the next run discards the orphan', async () => {
    const { fx, w } = await setup('', { CORRAL_MEMORY_OUTCOMES: 'p1=hang' });
    await waitFor(() => w.logs.some((l) => l.msg === 'build started'), 'the build to start');
    const asked = Date.now();
    w.child.kill('SIGTERM');
    expect(await w.exited).toEqual({ code: 0, signal: null });
    // The build never ends by itself (outcome "hang"): exiting at all means it was abandoned.
    const requested = w.logs.find((l) => l.msg.startsWith('stop requested'));
    const stopped = w.logs.find((l) => l.msg === 'corral watch stopped');
    expect(stopped!.time - requested!.time).toBeLessThan(10_000);
    expect(requested!.time).toBeGreaterThanOrEqual(asked);
    expect(existsSync(join(fx.stateDir, 'lock'))).toBe(false);
    const events = (await readFile(join(fx.stateDir, 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { action: string; error?: string });
    expect(events.some((e) => e.action === 'build' && /abandoned/.test(e.error ?? ''))).toBe(true);
    const next = await runCli(['reconcile', '--once', '--config', fx.config, '--hypervisor', 'memory', '--json']);
    expect(next.code).toBe(0);
    const done = JSON.parse(next.stdout) as { results: { action: { action: string } }[] };
    expect(done.results.map((r) => r.action.action)).toContain('discard');
    expect(await runners(fx, 'p1')).toBe(2);
  });

  it('makes a cron "reconcile --once" exit 75 at once with a one-line message while it runs', async () => {
    const { fx, w } = await setup();
    await settled(fx, w, { p1: 2 });
    const cron = await runCli(['reconcile', '--once', '--config', fx.config, '--hypervisor', 'memory']);
    expect(cron.code).toBe(75);
    // It did not wait for the lock: the watch never lets go of it, and is still running.
    expect(w.child.exitCode).toBeNull();
    expect(cron.ms).toBeLessThan(30_000); // ~0.7 s on an idle machine: node start-up, then the lock
    const lines = cron.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`locked by pid ${w.child.pid} (corral watch`);
  });
});
