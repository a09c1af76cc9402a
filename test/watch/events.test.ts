/**
 * `watch` on the memory backend, in-process with a fake clock: guest events trigger passes, a
 * burst coalesces, and a failing profile is retried at its back-off expiry — the requeue time the
 * plan returns — not at the resync (10 min here, so only the event or the requeue can explain a pass).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createValidators } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import type { BuildOutcome, MemoryHypervisor } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { WatchDaemon } from '../../src/watch/daemon.js';
import { FakeClock } from '../builders/fake-clock.js';
import { memoryWorld } from '../builders/world.js';
import { writeProfile, type LogLine } from './harness.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function start(
  profiles: Record<string, number>,
  outcome: (p: string) => BuildOutcome = () => 'succeed',
  prepare?: (hv: MemoryHypervisor) => void,
) {
  const root = await mkdtemp(join(tmpdir(), 'corral-events-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const src = join(root, 'src');
  for (const [name, runners] of Object.entries(profiles)) await writeProfile(src, name, runners);
  const clock = new FakeClock(new Date('2026-11-27T14:00:00Z'));
  const world = memoryWorld({
    stateDir: join(root, 'state'),
    clock: () => clock.date(),
    sleep: () => realSleep(2),
    hypervisor: { outcome },
    config: {
      sources: [{ name: 'test', path: src }],
      backoff: { initialSeconds: 30, maxSeconds: 60 },
      watch: { debounceMs: 50, resyncSeconds: 600, absentGraceSeconds: 60, events: true },
    },
  });
  prepare?.(world.hypervisor);
  const logs: LogLine[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const daemon = new WatchDaemon({
    config: world.config,
    loadConfig: async () => world.config,
    validators: createValidators(),
    log,
    runtime: world.runtime,
    ownerToken: 'watch-under-test',
    clock,
  });
  cleanups.push(() => daemon.stop());
  await daemon.start();
  const passes = (trigger?: string) =>
    logs.filter((l) => l.msg === 'pass starting' && (!trigger || (l.triggers as string[]).includes(trigger)));
  const running = (profile: string) =>
    world.hypervisor
      .snapshot()
      .guests.filter((g) => g.name.startsWith(`ci-runner-${profile}.`) && g.state === 'running').length;
  /** Lets real I/O run while fake time creeps on in debounce-sized steps; never reaches a 30 s back-off unnoticed. */
  const until = async (what: string, check: () => boolean, stepMs = 20, maxSteps = 500) => {
    for (let i = 0; i < maxSteps; i++) {
      if (check()) return;
      await realSleep(10);
      clock.advance(stepMs);
    }
    throw new Error(`timed out waiting for ${what}`);
  };
  /** Runs until no pass is running or pending and no debounce timer is armed (the resync and requeue may be). */
  const settle = async () => {
    for (let quietFor = 0, i = 0; quietFor < 5; i++) {
      if (i > 1000) throw new Error('never settled');
      await realSleep(10);
      const last = logs.filter((l) => l.msg === 'pass starting' || l.msg === 'pass done').pop();
      const due = clock.nextAt();
      const soon = due !== undefined && due - clock.now() <= 100;
      if (last?.msg === 'pass done' && !soon) quietFor++;
      else quietFor = 0;
      if (soon) clock.advance(Math.max(0, (due ?? 0) - clock.now()));
    }
  };
  return { world, clock, logs, passes, running, until, settle, hv: world.hypervisor };
}

describe('watch: guest events and requeue (memory backend, fake clock)', { timeout: 60_000 }, () => {
  it('replaces a runner that shut off on the guest event, long before the resync', async () => {
    const w = await start({ p1: 2 });
    await w.until('two runners', () => w.running('p1') === 2);
    await w.settle();
    const before = w.passes().length;
    const startedAt = w.clock.now();
    w.hv.setState('ci-runner-p1.1', 'shutoff');
    await w.until('the replacement', () => w.running('p1') === 2 && w.passes().length > before);
    const [first] = w.passes().slice(before);
    expect(first?.triggers).toEqual(['guest-event']);
    expect(first?.guests).toEqual(['ci-runner-p1.1']);
    expect(w.clock.now() - startedAt).toBeLessThan(1000);
    expect(w.passes('resync')).toHaveLength(0);
  });

  it('coalesces a burst of 20 shut-offs into one or two passes', async () => {
    const w = await start({ p1: 20 });
    await w.until('20 runners', () => w.running('p1') === 20, 20, 1000);
    await w.settle();
    const before = w.passes().length;
    for (let i = 1; i <= 20; i++) w.hv.setState(`ci-runner-p1.${i}`, 'shutoff');
    await w.until('20 replacements', () => w.running('p1') === 20 && w.passes().length > before, 20, 1000);
    await w.settle();
    const after = w.passes().slice(before);
    // A follow-up of the last pass may be coalesced into the same one on a loaded machine.
    expect(after[0]?.triggers).toContain('guest-event');
    expect(after[0]?.events).toBeGreaterThanOrEqual(20);
    // The burst is one pass; the events of our own replacements (and the follow-up) at most one more.
    expect(after.filter((p) => (p.triggers as string[]).includes('guest-event')).length).toBeLessThanOrEqual(2);
    expect(w.hv.calls.createRunner).toBe(40);
  });

  it("retries a failing profile's build at its back-off expiry, not at the resync", async () => {
    const w = await start({ bad: 1 }, () => 'fail');
    await w.until('the first build to fail', () => w.logs.some((l) => l.msg === 'backing off'));
    await w.settle();
    expect(w.hv.calls.startBuild).toBe(1);
    const failedAt = Date.parse(w.logs.find((l) => l.msg === 'backing off')!.until as string);
    // Just before the expiry nothing happens...
    w.clock.advance(failedAt - w.clock.now() - 500);
    await w.settle();
    expect(w.hv.calls.startBuild).toBe(1);
    // ...and once it passes, the requeue timer alone starts the next build.
    w.clock.advance(600);
    await w.until('the second build', () => w.hv.calls.startBuild === 2);
    const retry = w.passes('requeue');
    expect(retry.length).toBeGreaterThan(0);
    expect(w.passes('resync')).toHaveLength(0);
  });

  it('replaces a runner that crashes on every boot with a back-off, not on every event', async () => {
    const w = await start({ p1: 1 });
    await w.until('the runner', () => w.running('p1') === 1);
    await w.settle();
    w.hv.setState('ci-runner-p1.1', 'crashed');
    await w.until('the first replacement', () => w.hv.calls.createRunner === 2 && w.running('p1') === 1);
    await w.settle();
    // It crashes again at once: now the profile backs off, and the crashed runner waits.
    w.hv.setState('ci-runner-p1.1', 'crashed');
    await w.settle();
    expect(w.hv.calls.createRunner).toBe(2);
    const waiting = w.logs.filter((l) => l.msg === 'pass done').pop();
    expect(waiting?.requeueAt).toBeDefined();
    w.clock.advance(Date.parse(waiting!.requeueAt as string) - w.clock.now() + 10);
    await w.until('the replacement after the back-off', () => w.hv.calls.createRunner === 3 && w.running('p1') === 1);
    expect(w.passes('requeue').length).toBeGreaterThan(0);
  });

  it('does not retry a build that failed on a configuration error, not even at the resync', async () => {
    const w = await start(
      { p1: 1 },
      () => 'succeed',
      (hv) => {
        hv.startBuild = async () => {
          throw new ConfigError('base version "x" is not a sha256 digest');
        };
      },
    );
    await w.until('the failed build', () => w.logs.some((l) => l.msg === 'build failed'));
    await w.settle();
    const failed = w.logs.find((l) => l.msg === 'build failed');
    expect(failed?.errorKind).toBe('config');
    w.clock.advance(601_000); // past the resync
    await w.until('the resync pass', () => w.passes('resync').length > 0);
    await w.settle();
    expect(w.logs.filter((l) => l.msg === 'build failed')).toHaveLength(1);
    expect(w.passes('retry')).toHaveLength(0);
  });
});
