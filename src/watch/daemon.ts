import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Runtime } from '../cli/runtime.js';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import type { Problem } from '../errors.js';
import { FileDigests } from '../sources/inputs.js';
import { clampTimerMs } from '../util/duration.js';
import type { CompiledView } from '../sources/view.js';
import { BackoffStore } from '../state/backoff-store.js';
import { readCurrentView } from '../state/compiled-store.js';
import { watchStatusPath, writeWatchStatus } from '../state/watch-status.js';
import { AbsenceTracker } from './absence.js';
import { chooseView } from './choose-view.js';
import { MountWatch } from './mounts.js';
import { createQueues, StoppedError, type PassQueues } from './queues.js';
import { Timers, watchPass } from './watch-pass.js';
import { maxWaitMs, reloadConfig } from './reload.js';
import { ProblemReporter, watchStatus } from './report.js';
import { PassScheduler, type Batch, type TriggerKind } from './scheduler.js';
import { ignoredPaths, relevance, watchTargets } from './targets.js';
import { WatchSet, type WatcherFactory } from './watch-set.js';

export interface WatchDeps {
  config: HostConfig;
  /** Reads the host config again (SIGHUP, or the file changed); throws ConfigError when it is invalid. */
  loadConfig(): Promise<HostConfig>;
  validators: Validators;
  log: Logger;
  runtime: Runtime;
  /** Token of the lock this process holds: rebuilds carrying it are in flight, not orphans. */
  ownerToken: string;
  createWatcher?: WatcherFactory;
}

/** Passes in a row that only follow up on progress before the watch stops chasing its tail. */
const MAX_FOLLOW_UPS = 20;
const RETRY_MS = 5000;
/** How soon a pass looks again at runners that are booting (not ready yet) or draining. */
const GUESTS_RECHECK_MS = 2000;

/** `corral watch`: file events and timers trigger passes; every pass re-reads and recomputes everything. */
export class WatchDaemon {
  private config: HostConfig;
  private runtime: Runtime;
  private lastGood: CompiledView | undefined;
  private configProblems: Problem[] = [];
  private lastPassAt: string | undefined;
  private followUps = 0;
  private retryMs = RETRY_MS;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private resolveStopping: () => void = () => undefined;
  private readonly stoppingSignal = new Promise<void>((resolve) => (this.resolveStopping = resolve));
  private readonly timers = new Timers<TriggerKind>();
  private readonly digests = new FileDigests();
  /** Builds this process is waiting on; a rebuild of ours not in it (say its destroy failed) is an orphan. */
  private readonly inFlight = new Set<string>();
  private readonly reporter: ProblemReporter;
  private readonly queues: PassQueues;
  private readonly scheduler: PassScheduler;
  private readonly watchSet: WatchSet;
  private readonly mounts: MountWatch;
  private absence: AbsenceTracker;
  private relevant: ReturnType<typeof relevance>;

  constructor(private readonly deps: WatchDeps) {
    this.config = deps.config;
    this.runtime = deps.runtime;
    this.reporter = new ProblemReporter(deps.log);
    this.queues = createQueues(this.config.concurrency);
    this.absence = new AbsenceTracker(this.config.watch.absentGraceSeconds * 1000, this.config.stateDir);
    this.relevant = relevance(this.config.sources, this.config.file);
    this.scheduler = new PassScheduler({
      now: () => Date.now(),
      setTimer: (fn, ms) => setTimeout(fn, clampTimerMs(ms)),
      clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
      debounceMs: this.config.watch.debounceMs,
      maxWaitMs: maxWaitMs(this.config.watch.debounceMs),
      run: (batch) => this.cycle(batch),
      onError: (error) => deps.log.error({ error: (error as Error).message }, 'pass crashed'),
    });
    this.watchSet = new WatchSet({
      log: deps.log,
      ignored: ignoredPaths([this.config.stateDir, this.config.imagesDir]),
      onEvent: (event, path) => this.onFileEvent(event, path),
      onFallback: () => this.scheduler.request('watcher'),
      ...(deps.createWatcher ? { createWatcher: deps.createWatcher } : {}),
    });
    this.mounts = new MountWatch({ onChange: () => this.scheduler.fileEvent('/proc/self/mountinfo', 'mounts') });
  }

  /** Sets up the watchers and runs the first pass. */
  async start(): Promise<void> {
    this.lastGood = await readCurrentView(this.config.stateDir);
    await this.absence.load();
    await this.watchSet.update(await watchTargets(this.config.sources, this.config.file));
    await this.mounts.start();
    this.deps.log.info(
      { sources: this.config.sources, config: this.config.file, debounceMs: this.config.watch.debounceMs },
      'corral watch started',
    );
    this.scheduler.request('start');
  }

  /** SIGHUP: read the host config again and resync now. */
  reload(): void {
    this.deps.log.info('reload requested');
    this.scheduler.request('reload');
  }

  /** SIGTERM/SIGINT: no new work; running actions finish, running builds are abandoned; watchers close. */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.deps.log.warn(
      'stop requested: finishing running actions; builds in flight are abandoned for the next pass to discard',
    );
    this.stopping = true;
    this.resolveStopping();
    this.timers.close();
    this.mounts.stop();
    this.queues.builds.stop();
    this.queues.clones.stop();
    await Promise.all([this.scheduler.stop(), this.watchSet.close()]);
    await Promise.all([this.queues.builds.onIdle(), this.queues.clones.onIdle()]);
    await rm(watchStatusPath(this.config.stateDir), { force: true });
    this.deps.log.info('corral watch stopped');
  }

  private onFileEvent(event: string, path: string): void {
    const kind = this.relevant(path);
    if (!kind || this.stopping) return;
    this.deps.log.debug({ event, path }, 'file event');
    this.scheduler.fileEvent(path, kind);
  }

  private later(kind: TriggerKind, ms: number): void {
    this.timers.set(kind, ms, () => this.scheduler.request(kind));
  }

  private async cycle(batch: Batch): Promise<void> {
    const { log } = this.deps;
    const waitedMs = Date.now() - batch.firstAt;
    log.info({ triggers: batch.kinds, events: batch.events, paths: batch.paths, waitedMs }, 'pass starting');
    const onlyFollowUp = batch.kinds.every((k) => k === 'follow-up');
    try {
      if (batch.kinds.includes('reload') || batch.kinds.includes('config')) {
        const reloaded = await reloadConfig(this.config, this.deps.loadConfig, log);
        this.configProblems = reloaded.problems;
        if (reloaded.config !== this.config) this.useConfig(reloaded.config);
      }
      await this.watchSet.update(await watchTargets(this.config.sources, this.config.file));
      const choice = await chooseView(this.lastGood, {
        config: this.config,
        validators: this.deps.validators,
        digests: this.digests,
        absence: this.absence,
        now: this.runtime.clock(),
      });
      if (choice.view) this.lastGood = choice.view;
      this.reporter.report(choice);
      const status = () =>
        writeWatchStatus(this.config.stateDir, watchStatus(choice, this.configProblems, this.lastPassAt));
      await status();
      if (choice.absence.nextExpiry !== undefined) this.later('grace', choice.absence.nextExpiry - Date.now() + 50);
      if (choice.view && !this.stopping) await this.pass(choice.view, onlyFollowUp);
      else if (!choice.view) log.warn('no view has compiled yet: nothing to reconcile until the sources compile');
      this.retryMs = RETRY_MS;
      if (choice.view) await status();
    } catch (error) {
      if (this.stopping && error instanceof StoppedError) return;
      if (this.stopping) return void log.warn({ error: (error as Error).message }, 'pass cut short by stop');
      log.error({ error: (error as Error).message, retryInMs: this.retryMs }, 'pass failed; retrying');
      this.later('retry', this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, this.config.watch.resyncSeconds * 1000);
    } finally {
      this.later('resync', this.config.watch.resyncSeconds * 1000);
    }
  }

  private async pass(view: CompiledView, followingUp: boolean): Promise<void> {
    const deps = {
      ...this.runtime,
      config: this.config,
      log: this.deps.log,
      ownerToken: this.deps.ownerToken,
      inFlight: this.inFlight,
    };
    const { progressed, guestsPending } = await watchPass(
      view,
      { ...deps, stopping: this.stoppingSignal, queues: this.queues },
      () => this.scheduler.request('build-done'),
    );
    // A runner saying ready (or idle) is only seen by a pass: look again soon while any is pending.
    if (guestsPending) this.later('guests', GUESTS_RECHECK_MS);
    this.lastPassAt = this.runtime.clock().toISOString();
    this.followUps = followingUp ? this.followUps + 1 : 0;
    if (!progressed) return;
    if (this.followUps < MAX_FOLLOW_UPS) this.scheduler.request('follow-up');
    else
      this.deps.log.warn(
        { passes: this.followUps },
        'still changing after many passes in a row; waiting for a trigger',
      );
  }

  private useConfig(config: HostConfig): void {
    this.config = config;
    this.relevant = relevance(config.sources, config.file);
    this.queues.builds.concurrency = config.concurrency.builds;
    this.queues.clones.concurrency = config.concurrency.clones;
    this.runtime = { ...this.runtime, backoff: new BackoffStore(config.stateDir, config.backoff) };
    this.scheduler.setDebounce(config.watch.debounceMs, maxWaitMs(config.watch.debounceMs));
    this.absence.setGrace(config.watch.absentGraceSeconds * 1000);
  }
}
