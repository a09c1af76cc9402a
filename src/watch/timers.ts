import { clampTimerMs } from '../util/duration.js';

/** The clock `watch` runs on: real by default, a fake one in tests that step time by hand. */
export interface WatchClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: WatchClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, clampTimerMs(ms)),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/** Named one-shot timers; setting one again replaces it. */
export class Timers<K> {
  private readonly timers = new Map<K, unknown>();
  private closed = false;

  constructor(private readonly clock: WatchClock = realClock) {}

  set(key: K, ms: number, fn: () => void): void {
    if (this.closed) return;
    this.clear(key);
    this.timers.set(
      key,
      this.clock.setTimeout(
        () => {
          this.timers.delete(key);
          fn();
        },
        clampTimerMs(Math.max(0, ms)),
      ),
    );
  }

  clear(key: K): void {
    const timer = this.timers.get(key);
    if (timer !== undefined) this.clock.clearTimeout(timer);
    this.timers.delete(key);
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers.values()) this.clock.clearTimeout(timer);
    this.timers.clear();
  }
}
