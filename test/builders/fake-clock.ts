import type { WatchClock } from '../../src/watch/timers.js';

interface Timer {
  id: number;
  at: number;
  fn: () => void;
}

/** A clock that only moves when told: timers fire in order as `advance` passes their time. */
export class FakeClock implements WatchClock {
  private time: number;
  private timers: Timer[] = [];
  private nextId = 1;

  constructor(start: Date) {
    this.time = start.getTime();
  }

  now(): number {
    return this.time;
  }

  date(): Date {
    return new Date(this.time);
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const timer = { id: this.nextId++, at: this.time + Math.max(0, ms), fn };
    this.timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }

  /** Moves time forward by `ms`, firing every timer that falls due on the way (earliest first). */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.time = Math.max(this.time, due.at);
      due.fn();
    }
    this.time = end;
  }

  /** When the next timer is due (epoch ms), if any. */
  nextAt(): number | undefined {
    return this.timers.length ? Math.min(...this.timers.map((t) => t.at)) : undefined;
  }
}
