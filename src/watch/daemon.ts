import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { runPass } from '../apply/pass.js';
import type { Runtime } from '../cli/runtime.js';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import { ConfigError, type Problem } from '../errors.js';
import { FileDigests } from '../sources/inputs.js';
import type { CompiledView } from '../sources/view.js';
import { BackoffStore } from '../state/backoff-store.js';
import { readCurrentView } from '../state/compiled-store.js';
import { watchStatusPath, writeWatchStatus } from '../state/watch-status.js';
import { AbsenceTracker } from './absence.js';
import { chooseView, sourceDirsOf, type Choice } from './choose-view.js';
import { createQueues, StoppedError, type PassQueues } from './queues.js';
import { maxWaitMs, mergeReloaded } from './reload.js';
import { ProblemReporter } from './report.js';
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
  private readonly timers = new Map<TriggerKind, NodeJS.Timeout>();
  private readonly digests = new FileDigests();
  private readonly reporter: ProblemReporter;
  private readonly queues: PassQueues;
  private readonly scheduler: PassScheduler;
  private readonly watchSet: WatchSet;
  private absence: AbsenceTracker;
  private relevant: ReturnType<typeof relevance>;

  constructor(private readonly deps: WatchDeps) {
    this.config = deps.config;
    this.runtime = deps.runtime;
    this.reporter = new ProblemReporter(deps.log);
    this.queues = createQueues(this.config.concurrency);
    this.absence = new AbsenceTracker(this.config.watch.absentGraceSeconds * 1000, []);
    this.relevant = relevance(this.config.sources, this.config.file);
    this.scheduler = new PassScheduler({
      now: () => Date.now(),
      setTimer: (fn, ms) => setTimeout(fn, ms),
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
  }

  /** Sets up the watchers and runs the first pass. */
  async start(): Promise<void> {
    this.lastGood = await readCurrentView(this.config.stateDir);
    this.absence = new AbsenceTracker(this.config.watch.absentGraceSeconds * 1000, sourceDirsOf(this.lastGood));
    await this.watchSet.update(await watchTargets(this.config.sources, this.config.file));
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
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
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
    if (this.stopping) return;
    clearTimeout(this.timers.get(kind));
    this.timers.set(
      kind,
      setTimeout(() => (this.timers.delete(kind), this.scheduler.request(kind)), ms),
    );
  }

  private async cycle(batch: Batch): Promise<void> {
    const { log } = this.deps;
    const waitedMs = Date.now() - batch.firstAt;
    log.info({ triggers: batch.kinds, events: batch.events, paths: batch.paths, waitedMs }, 'pass starting');
    const onlyFollowUp = batch.kinds.every((k) => k === 'follow-up');
    this.followUps = onlyFollowUp ? this.followUps + 1 : 0;
    try {
      if (batch.kinds.includes('reload') || batch.kinds.includes('config')) await this.reloadConfig();
      await this.watchSet.update(await watchTargets(this.config.sources, this.config.file));
      const choice = await chooseView(this.lastGood, {
        config: this.config,
        validators: this.deps.validators,
        digests: this.digests,
        absence: this.absence,
        now: this.runtime.clock(),
      });
      if (choice.view) this.lastGood = choice.view;
      const problems = this.reporter.report(choice, this.configProblems);
      await this.writeStatus(choice, problems);
      if (choice.absence.nextExpiry !== undefined) this.later('grace', choice.absence.nextExpiry - Date.now() + 50);
      if (choice.view && !this.stopping) await this.pass(choice.view);
      else if (!choice.view) log.warn('no view has compiled yet: nothing to reconcile until the sources compile');
      this.retryMs = RETRY_MS;
      if (choice.view) await this.writeStatus(choice, problems);
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

  private async pass(view: CompiledView): Promise<void> {
    const pass = await runPass(view, {
      ...this.runtime,
      config: this.config,
      log: this.deps.log,
      ownerToken: this.deps.ownerToken,
      stopping: this.stoppingSignal,
      queues: this.queues,
    });
    this.lastPassAt = this.runtime.clock().toISOString();
    if (pass.plan.actions.some((a) => a.action === 'build')) {
      pass.builds.then(
        () => this.scheduler.request('build-done'),
        (error: unknown) => {
          if (!(error instanceof StoppedError))
            this.deps.log.error({ error: (error as Error).message }, 'build crashed');
        },
      );
    }
    if (pass.results.some((r) => r.ok)) {
      if (this.followUps < MAX_FOLLOW_UPS) this.scheduler.request('follow-up');
      else
        this.deps.log.warn(
          { passes: this.followUps },
          'still changing after many passes in a row; waiting for the next trigger',
        );
    }
  }

  private async reloadConfig(): Promise<void> {
    const { log } = this.deps;
    try {
      const { config, kept } = mergeReloaded(this.config, await this.deps.loadConfig());
      if (kept.length > 0)
        log.warn(
          { settings: kept },
          'these settings change only when corral watch restarts; keeping the running values',
        );
      this.config = config;
      this.configProblems = [];
      this.relevant = relevance(config.sources, config.file);
      this.queues.builds.concurrency = config.concurrency.builds;
      this.queues.clones.concurrency = config.concurrency.clones;
      this.runtime = { ...this.runtime, backoff: new BackoffStore(config.stateDir, config.backoff) };
      this.scheduler.setDebounce(config.watch.debounceMs, maxWaitMs(config.watch.debounceMs));
      this.absence.setGrace(config.watch.absentGraceSeconds * 1000);
      log.info({ config: config.file, sources: config.sources.map((s) => s.name) }, 'host config reloaded');
    } catch (error) {
      const file = this.config.file ?? '';
      this.configProblems =
        error instanceof ConfigError && error.problems.length > 0
          ? error.problems
          : [{ file, severity: 'error', message: `cannot reload the host config: ${(error as Error).message}` }];
      log.error({ config: file }, 'the host config is invalid; keeping the previous one');
    }
  }

  private async writeStatus(choice: Choice, problems: Problem[]): Promise<void> {
    await writeWatchStatus(this.config.stateDir, {
      pid: process.pid,
      updatedAt: new Date().toISOString(),
      ...(choice.view ? { generation: choice.view.generation } : {}),
      // Only what makes the watch deviate (it shows as "using the last good view" in status).
      problems: choice.compiled && choice.absence.holding.length === 0 ? this.configProblems : problems,
      absentSince: choice.absence.absentSince,
      ...(this.lastPassAt ? { lastPassAt: this.lastPassAt } : {}),
    });
  }
}
