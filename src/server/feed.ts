import { open, stat } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Hypervisor, ObservedGuest } from '../hypervisor/hypervisor.js';
import type { Event, EventLog } from '../state/events.js';
import { readWatchStatus } from '../state/watch-status.js';

/** One item of the live stream (`GET /api/v1/events`). */
export type FeedEvent =
  | {
      type: 'pass';
      phase: 'start' | 'done';
      at: string;
      by: string;
      triggers?: string[];
      durationMs?: number;
      actions?: Record<string, number>;
      failed?: number;
    }
  | ({ type: 'action' } & Event)
  | {
      type: 'guest';
      at: string;
      change: 'appeared' | 'state' | 'gone';
      name: string;
      profile: string;
      role: ObservedGuest['role'];
      state: ObservedGuest['state'] | null;
      previous: ObservedGuest['state'] | null;
      createdAt: string;
    }
  | { type: 'request'; at: string; kind: 'rebuild' | 'reconcile'; profile?: string; via: string };

export interface FeedDeps {
  events: EventLog;
  stateDir: string;
  hypervisor(): Promise<Hypervisor>;
  clock: () => Date;
  log: Logger;
  /** How often the state dir and the hypervisor are looked at. */
  intervalMs: number;
  /** Report passes of a `watch` in another process (from watch-status.json); off when it is this process. */
  foreignPasses: boolean;
}

type Listener = (event: FeedEvent) => void;

/**
 * Turns what changes on disk and in the hypervisor into a stream of events: new lines of
 * events.jsonl (actions and results, whoever ran them), a new `lastPassAt` in watch-status.json
 * (a pass of a `watch` in another process), and guests that appeared, changed state or went away
 * (by diffing observations). Passes and requests of this process are published directly.
 */
export class LiveFeed {
  private readonly listeners = new Set<Listener>();
  private offset = -1;
  private lastPassAt: string | undefined;
  private guests: Map<string, ObservedGuest> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly deps: FeedDeps) {}

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  publish(event: FeedEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        this.deps.log.warn({ error: (error as Error).message }, 'live feed listener failed');
      }
    }
  }

  /** Reads the current state as the baseline (no events for what already exists), then polls. */
  async start(): Promise<void> {
    this.offset = await stat(this.deps.events.file).then(
      (s) => s.size,
      () => 0,
    );
    this.lastPassAt = (await readWatchStatus(this.deps.stateDir))?.lastPassAt;
    await this.tick();
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * Looks now, after any look in progress, so what it sees is at least as new as the call. Passes
   * of this process call it before they act: a runner that shut off is then published when it
   * was seen, before its replacement, not in the same look (which would measure a replacement
   * latency of 0; see metrics.ts).
   */
  async tick(): Promise<void> {
    while (this.ticking) await this.ticking;
    this.ticking = this.look();
    try {
      await this.ticking;
    } finally {
      this.ticking = undefined;
    }
  }

  private async look(): Promise<void> {
    try {
      await this.readEvents();
      if (this.deps.foreignPasses) await this.readWatchStatus();
      await this.observe();
    } catch (error) {
      this.deps.log.debug({ error: (error as Error).message }, 'live feed poll failed');
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.tick().finally(() => this.schedule());
    }, this.deps.intervalMs);
  }

  private async readEvents(): Promise<void> {
    const size = await stat(this.deps.events.file).then(
      (s) => s.size,
      () => 0,
    );
    if (size < this.offset) this.offset = 0; // replaced or truncated behind our back
    if (size === this.offset) return;
    const handle = await open(this.deps.events.file, 'r');
    let text: string;
    try {
      const buffer = Buffer.alloc(size - this.offset);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, this.offset);
      text = buffer.subarray(0, bytesRead).toString('utf8');
    } finally {
      await handle.close();
    }
    // Only whole lines: a line being written is read on the next look.
    const end = text.lastIndexOf('\n');
    if (end === -1) return;
    this.offset += Buffer.byteLength(text.slice(0, end + 1));
    for (const line of text.slice(0, end).split('\n')) {
      if (!line) continue;
      try {
        this.publish({ type: 'action', ...(JSON.parse(line) as Event) });
      } catch {
        // a damaged line is skipped, as EventLog.recent does
      }
    }
  }

  private async readWatchStatus(): Promise<void> {
    const status = await readWatchStatus(this.deps.stateDir);
    const at = status?.lastPassAt;
    if (at && at !== this.lastPassAt) {
      this.lastPassAt = at;
      this.publish({ type: 'pass', phase: 'done', at, by: `watch (pid ${status.pid})` });
    }
  }

  private async observe(): Promise<void> {
    const observed = await (await this.deps.hypervisor()).observe();
    const next = new Map(observed.guests.map((g) => [g.name, g]));
    const previous = this.guests;
    this.guests = next;
    if (!previous) return;
    const at = this.deps.clock().toISOString();
    const base = (g: ObservedGuest) => ({
      type: 'guest' as const,
      at,
      name: g.name,
      profile: g.profile,
      role: g.role,
      createdAt: g.meta.createdAt,
    });
    for (const [name, g] of previous) {
      const now = next.get(name);
      // The same name on a new guest (a runner replaced between two looks) is a departure and an arrival.
      if (!now || now.meta.createdAt !== g.meta.createdAt)
        this.publish({ ...base(g), change: 'gone', state: null, previous: g.state });
    }
    for (const [name, g] of next) {
      const before = previous.get(name);
      if (!before || before.meta.createdAt !== g.meta.createdAt)
        this.publish({ ...base(g), change: 'appeared', state: g.state, previous: null });
      else if (before.state !== g.state)
        this.publish({ ...base(g), change: 'state', state: g.state, previous: before.state });
    }
  }
}
