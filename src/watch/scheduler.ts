/**
 * Why a pass runs. Debounced: `change` (sources), `config` (the host config file), `mounts` (the
 * mount table), `guest-event` (a lifecycle event of one of our guests). The rest run at once:
 * `requeue` is the plan's own "look again at" time, `events-resumed` the event stream coming back.
 */
export type TriggerKind =
  | 'start'
  | 'change'
  | 'config'
  | 'mounts'
  | 'guest-event'
  | 'reload'
  | 'resync'
  | 'requeue'
  | 'build-done'
  | 'follow-up'
  | 'retry'
  | 'events-resumed'
  | 'watcher'
  | 'api';

/** Everything that asked for a pass since the last one started, coalesced. */
export interface Batch {
  kinds: TriggerKind[];
  /** Up to MAX_PATHS distinct paths that changed (the rest are only counted in `events`). */
  paths: string[];
  /** Up to MAX_PATHS distinct guests that had lifecycle events. */
  guests: string[];
  /** File and guest events coalesced into this pass. */
  events: number;
  /** Time of the first request in the batch (epoch ms). */
  firstAt: number;
}

export const MAX_PATHS = 20;

export interface SchedulerDeps {
  now(): number;
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
  /** Quiet time after the last file event before a pass starts. */
  debounceMs: number;
  /** A stream of events that never goes quiet still gets a pass this long after its first event. */
  maxWaitMs: number;
  /** Runs one pass. Never called while a previous call is still running. */
  run(batch: Batch): Promise<void>;
  onError(error: unknown): void;
}

interface Pending {
  kinds: Set<TriggerKind>;
  paths: Set<string>;
  guests: Set<string>;
  events: number;
  firstAt: number;
  /** Set by non-file requests: run as soon as the current pass (if any) is done. */
  immediate: boolean;
  firstEventAt?: number;
  lastEventAt?: number;
}

/**
 * Turns triggers into passes: file events are debounced (trailing, with a cap), other requests run
 * at once; passes never overlap, and anything that arrives during a pass becomes exactly one more
 * pass after it. Events carry no meaning beyond "look again": every pass re-reads everything.
 */
export class PassScheduler {
  private pending: Pending | undefined;
  private timer: unknown;
  private current: Promise<void> | undefined;
  private stopped = false;
  private debounceMs: number;
  private maxWaitMs: number;

  constructor(private readonly deps: SchedulerDeps) {
    this.debounceMs = deps.debounceMs;
    this.maxWaitMs = deps.maxWaitMs;
  }

  /** A file event: the pass waits until events have been quiet for the debounce time. */
  fileEvent(path: string, kind: 'change' | 'config' | 'mounts' = 'change'): void {
    if (this.stopped) return;
    const p = this.batch(kind);
    if (p.paths.size < MAX_PATHS) p.paths.add(path);
    this.debounced(p);
  }

  /** A guest lifecycle event: debounced and coalesced like file events (a burst of shut-offs is one pass). */
  guestEvent(guest: string): void {
    if (this.stopped) return;
    const p = this.batch('guest-event');
    if (p.guests.size < MAX_PATHS) p.guests.add(guest);
    this.debounced(p);
  }

  private debounced(p: Pending): void {
    const now = this.deps.now();
    p.events++;
    p.firstEventAt ??= now;
    p.lastEventAt = now;
    this.arm();
  }

  /** A non-file reason for a pass (start, resync, signal, build finished): runs as soon as possible. */
  request(kind: TriggerKind): void {
    if (this.stopped) return;
    this.batch(kind).immediate = true;
    this.arm();
  }

  setDebounce(debounceMs: number, maxWaitMs: number): void {
    this.debounceMs = debounceMs;
    this.maxWaitMs = maxWaitMs;
  }

  get busy(): boolean {
    return this.current !== undefined;
  }

  /** No further passes start; resolves when the running one (if any) is done. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) this.deps.clearTimer(this.timer);
    this.timer = undefined;
    this.pending = undefined;
    await this.current;
  }

  private batch(kind: TriggerKind): Pending {
    this.pending ??= {
      kinds: new Set(),
      paths: new Set(),
      guests: new Set(),
      events: 0,
      firstAt: this.deps.now(),
      immediate: false,
    };
    this.pending.kinds.add(kind);
    return this.pending;
  }

  private dueAt(p: Pending): number {
    if (p.immediate || p.lastEventAt === undefined || p.firstEventAt === undefined) return this.deps.now();
    return Math.min(p.lastEventAt + this.debounceMs, p.firstEventAt + this.maxWaitMs);
  }

  private arm(): void {
    if (this.stopped || this.current || !this.pending) return;
    if (this.timer !== undefined) this.deps.clearTimer(this.timer);
    const delay = Math.max(0, this.dueAt(this.pending) - this.deps.now());
    this.timer = this.deps.setTimer(() => this.fire(), delay);
  }

  private fire(): void {
    this.timer = undefined;
    const p = this.pending;
    if (this.stopped || this.current || !p) return;
    this.pending = undefined;
    const batch: Batch = {
      kinds: [...p.kinds],
      paths: [...p.paths],
      guests: [...p.guests],
      events: p.events,
      firstAt: p.firstAt,
    };
    this.current = this.deps
      .run(batch)
      .catch((error: unknown) => this.deps.onError(error))
      .finally(() => {
        this.current = undefined;
        this.arm();
      });
  }
}
