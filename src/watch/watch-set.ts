import { FSWatcher, type ChokidarOptions } from 'chokidar';
import type { Logger } from 'pino';
import type { WatchTarget } from './targets.js';

export type WatcherFactory = (options: ChokidarOptions) => FSWatcher;

export interface WatchSetDeps {
  log: Logger;
  /** Paths chokidar should not even look at. */
  ignored: (path: string) => boolean;
  onEvent(event: string, path: string): void;
  /** Called once the watchers run in polling mode: events may have been lost meanwhile, so look again. */
  onFallback(): void;
  createWatcher?: WatcherFactory;
  /** Stat interval once polling (default 1000 ms). */
  pollIntervalMs?: number;
  /** Give up waiting for a watcher's initial scan after this long (default 30 s). */
  readyTimeoutMs?: number;
}

/** Out of inotify watches (ENOSPC) or file descriptors: polling still works, slower. */
const FALLBACK_CODES = new Set(['ENOSPC', 'EMFILE', 'ENFILE']);

/**
 * One chokidar watcher per target (chokidar's depth is per watcher), kept in step with the targets
 * computed before each pass. Changes to the set run one at a time.
 */
export class WatchSet {
  private readonly watchers = new Map<string, FSWatcher>();
  private targets: WatchTarget[] = [];
  private polling = false;
  private closed = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly deps: WatchSetDeps) {}

  get mode(): 'events' | 'polling' {
    return this.polling ? 'polling' : 'events';
  }

  /** Watches exactly these targets; resolves once new watchers have finished their initial scan. */
  update(targets: WatchTarget[]): Promise<void> {
    return this.serial(() => this.apply(targets));
  }

  close(): Promise<void> {
    this.closed = true;
    return this.serial(() => this.closeAll());
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async apply(targets: WatchTarget[]): Promise<void> {
    if (this.closed) return;
    this.targets = targets;
    const wanted = new Map(targets.map((t) => [`${t.depth}:${t.dir}`, t]));
    for (const [key, watcher] of [...this.watchers]) {
      if (wanted.has(key)) continue;
      this.watchers.delete(key);
      this.deps.log.debug({ target: key }, 'no longer watching');
      await watcher.close();
    }
    const scans: Promise<void>[] = [];
    for (const [key, target] of wanted) {
      if (this.watchers.has(key)) continue;
      const watcher = this.open(target);
      this.watchers.set(key, watcher);
      scans.push(this.ready(watcher, target));
      this.deps.log.info({ dir: target.dir, depth: target.depth, mode: this.mode }, 'watching');
    }
    await Promise.all(scans);
  }

  private open(target: WatchTarget): FSWatcher {
    const interval = this.deps.pollIntervalMs ?? 1000;
    const options: ChokidarOptions = {
      depth: target.depth,
      ignoreInitial: true,
      followSymlinks: true,
      ignorePermissionErrors: true,
      usePolling: this.polling,
      interval,
      binaryInterval: interval,
      ignored: (path: string) => this.deps.ignored(path),
    };
    const watcher = (this.deps.createWatcher ?? ((o) => new FSWatcher(o)))(options);
    watcher.on('all', (event, path) => this.deps.onEvent(event, path));
    watcher.on('error', (error) => this.onError(error as NodeJS.ErrnoException));
    watcher.add(target.dir);
    return watcher;
  }

  private ready(watcher: FSWatcher, target: WatchTarget): Promise<void> {
    const timeoutMs = this.deps.readyTimeoutMs ?? 30_000;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.deps.log.warn({ dir: target.dir, timeoutMs }, 'watcher still scanning; going on without waiting');
        resolve();
      }, timeoutMs);
      timer.unref();
      watcher.once('ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private onError(error: NodeJS.ErrnoException): void {
    const code = error.code ?? '';
    if (FALLBACK_CODES.has(code)) {
      if (this.polling || this.closed) return void this.deps.log.debug({ code }, 'watcher error while polling');
      this.polling = true;
      const interval = this.deps.pollIntervalMs ?? 1000;
      this.deps.log.warn(
        { code, error: error.message, pollIntervalMs: interval },
        `file watcher failed (${code}: out of inotify watches or file descriptors); falling back to polling every ${interval} ms`,
      );
      this.serial(async () => {
        await this.closeAll();
        await this.apply(this.targets);
      }).then(
        () => this.deps.onFallback(),
        (e: unknown) =>
          this.deps.log.error({ error: (e as Error).message }, 'could not restart the watchers in polling mode'),
      );
      return;
    }
    this.deps.log.warn({ code, error: error.message }, 'file watcher error');
  }

  private async closeAll(): Promise<void> {
    const all = [...this.watchers.values()];
    this.watchers.clear();
    await Promise.all(all.map((w) => w.close()));
  }
}
