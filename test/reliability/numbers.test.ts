/** Issue 14, item 3: every duration and number has a sane range, checked at validate with file and field. */
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { aHostConfig, aProfileDir, cleanup, tempRoot } from '../builders/profile-dir.js';
import { clampTimerMs, MAX_TIMER_MS, parseDuration } from '../../src/util/duration.js';
import { Timers } from '../../src/watch/timers.js';
import { cli } from './world.js';

afterEach(cleanup);
afterEach(() => vi.useRealTimers());

const HUGE = '9'.repeat(400);

describe('host config durations', () => {
  for (const [key, value, message] of [
    ['/watch/resync', { watch: { resync: 0 } }, 'out of range: must be between 1s and 7d'],
    ['/watch/resync', { watch: { resync: '30d' } }, 'out of range'],
    ['/watch/debounce', { watch: { debounce: '1h' } }, 'out of range'],
    ['/watch/absentGrace', { watch: { absentGrace: HUGE } }, 'not a duration'],
    ['/rebuild/backoffMax', { rebuild: { backoffMax: '100000d' } }, 'out of range'],
    ['/rebuild/backoffInitial', { rebuild: { backoffInitial: `${HUGE}s` } }, 'not a duration'],
    ['/rebuild/backoffMax', { rebuild: { backoffInitial: '1h', backoffMax: '1m' } }, 'must not be shorter'],
  ] as const) {
    it(`${JSON.stringify(value).slice(0, 60)} is rejected at ${key}`, async () => {
      const root = await tempRoot();
      const config = await aHostConfig(root).set(value).write();
      const r = await cli(['validate', '--config', config]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`${config}#${key}: `);
      expect(r.stderr).toContain(message);
    });
  }
});

describe('profile numbers', () => {
  for (const [key, yaml, message] of [
    ['/provision/timeout', { provision: { timeout: HUGE } }, 'not a duration'],
    ['/provision/timeout', { provision: { timeout: '30d' } }, 'out of range'],
    ['/rebuild/maxAge', { rebuild: { maxAge: '1s' } }, 'out of range'],
    ['/guest/memory', { guest: { memory: '0' } }, 'out of range'],
    ['/guest/memory', { guest: { memory: 8 } }, 'out of range'],
    ['/guest/memory', { guest: { memory: '99999999G' } }, 'out of range'],
  ] as const) {
    it(`${JSON.stringify(yaml).slice(0, 60)} is rejected at ${key}`, async () => {
      const root = await tempRoot();
      const { file } = await aProfileDir(join(root, 'local'), 'web').yaml(yaml).write();
      const config = await aHostConfig(root).source('local', 'local').write();
      const r = await cli(['validate', '--config', config]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain(`${file}#${key}: `);
      expect(r.stderr).toContain(message);
    });
  }
});

describe('timers', () => {
  it('a 400-digit duration is no duration (it was Infinity, stored as null)', () => {
    expect(parseDuration(HUGE)).toBeUndefined();
    expect(parseDuration(`${HUGE}ms`)).toBeUndefined();
  });

  it('are clamped below 2^31 ms: a long one does not fire at once', () => {
    vi.useFakeTimers();
    const timers = new Timers<string>();
    const fired: string[] = [];
    timers.set('grace', 2 ** 31 + 5, () => fired.push('grace'));
    timers.set('resync', 30 * 86400 * 1000, () => fired.push('resync'));
    vi.advanceTimersByTime(1000);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(MAX_TIMER_MS);
    expect(fired.sort()).toEqual(['grace', 'resync']);
    timers.close();
    expect(clampTimerMs(Infinity)).toBe(MAX_TIMER_MS);
    expect(clampTimerMs(-5)).toBe(0);
  });
});
