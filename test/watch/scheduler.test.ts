import { describe, expect, it } from 'vitest';
import { PassScheduler, type Batch } from '../../src/watch/scheduler.js';

/** A scheduler on a hand-driven clock: `advance` fires due timers in order. */
function harness(debounceMs = 300, maxWaitMs = 3000) {
  let now = 0;
  const timers = new Map<number, { at: number; fn: () => void }>();
  let nextId = 1;
  const batches: Batch[] = [];
  const finishers: (() => void)[] = [];
  const scheduler = new PassScheduler({
    now: () => now,
    setTimer: (fn, ms) => (timers.set(nextId, { at: now + ms, fn }), nextId++),
    clearTimer: (id) => timers.delete(id as number),
    debounceMs,
    maxWaitMs,
    run: (batch) => {
      batches.push(batch);
      return new Promise<void>((resolve) => finishers.push(resolve));
    },
    onError: () => undefined,
  });
  const flush = () => new Promise((r) => setTimeout(r, 0));
  const advance = async (ms: number) => {
    const until = now + ms;
    for (;;) {
      const due = [...timers].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      timers.delete(due[0]);
      now = due[1].at;
      due[1].fn();
      await flush();
    }
    now = until;
  };
  const finish = async () => {
    finishers.shift()?.();
    await flush();
    await flush();
  };
  return { scheduler, batches, advance, finish };
}

describe('PassScheduler', () => {
  it('runs one pass for a burst of events, after the debounce', async () => {
    const h = harness();
    for (let i = 0; i < 200; i++) {
      h.scheduler.fileEvent(`/src/p/f${i}`);
      await h.advance(1);
    }
    await h.advance(298); // the last event came at 199
    expect(h.batches).toHaveLength(0);
    await h.advance(1);
    expect(h.batches).toHaveLength(1);
    expect(h.batches[0]).toMatchObject({ kinds: ['change'], events: 200 });
    expect(h.batches[0]!.paths).toHaveLength(20);
  });

  it('caps the wait for a stream of events that never goes quiet', async () => {
    const h = harness(300, 1000);
    for (let i = 0; i < 20; i++) {
      h.scheduler.fileEvent('/src/p/profile.yaml');
      await h.advance(100);
    }
    expect(h.batches).toHaveLength(1);
  });

  it('never overlaps passes, and turns anything during a pass into exactly one more', async () => {
    const h = harness();
    h.scheduler.request('start');
    await h.advance(0);
    expect(h.batches).toHaveLength(1);
    h.scheduler.fileEvent('/src/a');
    h.scheduler.request('resync');
    h.scheduler.request('build-done');
    await h.advance(1000);
    expect(h.batches).toHaveLength(1);
    await h.finish();
    await h.advance(0);
    expect(h.batches).toHaveLength(2);
    expect(h.batches[1]!.kinds.sort()).toEqual(['build-done', 'change', 'resync']);
    await h.finish();
    await h.advance(10_000);
    expect(h.batches).toHaveLength(2);
  });

  it('runs non-file requests at once, and takes pending file events along', async () => {
    const h = harness();
    h.scheduler.fileEvent('/src/a');
    h.scheduler.request('reload');
    await h.advance(0);
    expect(h.batches[0]).toMatchObject({ events: 1, paths: ['/src/a'] });
  });

  it('starts nothing after stop', async () => {
    const h = harness();
    h.scheduler.fileEvent('/src/a');
    const stopped = h.scheduler.stop();
    await h.advance(1000);
    await stopped;
    h.scheduler.request('resync');
    await h.advance(1000);
    expect(h.batches).toHaveLength(0);
  });
});
