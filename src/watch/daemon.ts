import { CiOutageStore } from '../state/ci-outages.js';
import { DeregistrationStore } from '../state/ci-deregistrations.js';
import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { StartedBuild } from '../apply/apply.js';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import { ConfigError, type Problem } from '../errors.js';
import type { GuestEvent, GuestEventStream } from '../hypervisor/hypervisor.js';
import { hasPrefix } from '../hypervisor/names.js';
import type { AbsentSource } from '../plan/types.js';
import { runPass, TRANSIENT_RETRY } from '../reconcile/pass.js';
import { absentSourcesOf, backoffStores, type Runtime } from '../reconcile/runtime.js';
import { FileDigests } from '../sources/inputs.js';
import type { CompiledView } from '../sources/view.js';
import { readCurrentView } from '../state/compiled-store.js';
import { knownSourcesOf } from '../state/source-absence.js';
import { watchStatusPath, writeWatchStatus } from '../state/watch-status.js';
import { AbsenceTracker, type AbsenceReport } from './absence.js';
import { chooseView } from './choose-view.js';
import { MountWatch } from './mounts.js';
import { createQueues, StoppedError, type PassQueues } from './queues.js';
import { realClock, Timers, type WatchClock } from './timers.js';
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
  /** Timers and "now" for the scheduler and the wake-ups (tests pass a fake clock; runtime.clock must agree). */
  clock?: WatchClock;
  /** Told when a pass starts and ends (the console's live stream and metrics). */
  onPass?: (pass: { phase: 'start' | 'done'; at: string; triggers: string[]; durationMs?: number }) => void;
}

/** Passes in a row that only follow up on progress before the watch stops chasing its tail. */
const MAX_FOLLOW_UPS = 20;

/**
 * `corral watch` (docs/design.md, "Events and requeue"): file events, guest lifecycle events and
 * timers trigger passes; every pass re-reads and recomputes everything (level-triggered), so an
 * event only says "look again" and a lost one costs at most the resync. Besides the resync, one
 * timer is armed for the plan's own requeue time (a back-off expiry, a template reaching its
 * maxAge, a build's deadline, a source's grace end).
 */
export class WatchDaemon {
  private config: HostConfig;
  private runtime: Runtime;
  private lastGood: CompiledView | undefined;
  private configProblems: Problem[] = [];
  private lastPassAt: string | undefined;
  private followUps = 0;
  private retryMs: number = TRANSIENT_RETRY.firstMs;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private resolveStopping: () => void = () => undefined;
  private readonly stoppingSignal = new Promise<void>((resolve) => (this.resolveStopping = resolve));
  private readonly clock: WatchClock;
  private readonly timers: Timers<TriggerKind>;
  private readonly digests = new FileDigests();
  /**
   * Builds this process has queued or is waiting on. Only the daemon changes it (when a pass hands
   * back the builds it started, and when each settles); each plan gets a copy.
   */
  private readonly inFlight = new Set<string>();
  private guestEvents: GuestEventStream | undefined;
  /** Builds that failed on a configuration error, by profile: not retried until the profile's inputs change. */
  private readonly configErrors = new Map<string, { inputsHash: string; error: string }>();
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
    this.clock = deps.clock ?? realClock;
    this.timers = new Timers<TriggerKind>(this.clock);
    this.reporter = new ProblemReporter(deps.log);
    this.queues = createQueues(this.config.concurrency);
    this.absence = new AbsenceTracker(this.config.watch.absentGraceSeconds * 1000, this.config.stateDir);
    this.relevant = relevance(this.config.sources, this.config.file);
    this.scheduler = new PassScheduler({
      now: () => this.clock.now(),
      setTimer: (fn, ms) => this.clock.setTimeout(fn, ms),
      clearTimer: (handle) => this.clock.clearTimeout(handle),
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
    const known = knownSourcesOf(this.lastGood).map((k) => k.dir);
    await this.watchSet.update(await watchTargets(this.config.sources, this.config.file, known));
    await this.mounts.start();
    if (this.config.watch.events)
      this.guestEvents = this.runtime.hypervisor.watchEvents({
        onEvent: (event) => this.onGuestEvent(event),
        onResumed: () => this.scheduler.request('events-resumed'),
      });
    else
      this.deps.log.info('guest events are off (watch.events: false): only the resync and requeue timers look again');
    this.deps.log.info(
      { sources: this.config.sources, config: this.config.file, debounceMs: this.config.watch.debounceMs },
      'corral watch started',
    );
    this.scheduler.request('start');
  }

  /** SIGHUP: read the host config again and resync now. */
  /** A pass asked for from outside (the HTTP API): runs as soon as the current one is done. */
  requestPass(): void {
    this.scheduler.request('api');
  }

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
    await this.guestEvents?.close();
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

  /** Only our own guests matter; the event says nothing but "look again". */
  private onGuestEvent(event: GuestEvent): void {
    if (this.stopping || !hasPrefix(this.config.prefix, event.guest)) return;
    this.deps.log.debug({ guest: event.guest, event: event.kind, detail: event.detail }, 'guest event');
    this.scheduler.guestEvent(event.guest);
  }

  private later(kind: TriggerKind, ms: number): void {
    this.timers.set(kind, ms, () => this.scheduler.request(kind));
  }

  private async cycle(batch: Batch): Promise<void> {
    const { log } = this.deps;
    const waitedMs = this.clock.now() - batch.firstAt;
    log.info(
      { triggers: batch.kinds, events: batch.events, paths: batch.paths, guests: batch.guests, waitedMs },
      'pass starting',
    );
    const startedAt = this.clock.now();
    this.deps.onPass?.({ phase: 'start', at: new Date(startedAt).toISOString(), triggers: batch.kinds });
    const onlyFollowUp = batch.kinds.every((k) => k === 'follow-up');
    try {
      if (batch.kinds.includes('reload') || batch.kinds.includes('config')) {
        const reloaded = await reloadConfig(this.config, this.deps.loadConfig, log);
        this.configProblems = reloaded.problems;
        if (reloaded.config !== this.config) this.useConfig(reloaded.config);
      }
      const choice = await chooseView(this.lastGood, {
        config: this.config,
        validators: this.deps.validators,
        digests: this.digests,
        absence: this.absence,
        now: this.runtime.clock(),
      });
      // From the compile's own enumeration; a dir that appears after it shows up at its watched parent.
      await this.watchSet.update(await watchTargets(this.config.sources, this.config.file, choice.sourceDirs));
      if (choice.view) this.lastGood = choice.view;
      this.reporter.report(choice);
      const status = () =>
        writeWatchStatus(this.config.stateDir, watchStatus(choice, this.configProblems, this.lastPassAt));
      await status();
      if (choice.view && !this.stopping) await this.pass(choice.view, onlyFollowUp, absentSources(choice.absence));
      else if (!choice.view) log.warn('no view has compiled yet: nothing to reconcile until the sources compile');
      if (choice.view) await status();
      if (choice.view)
        this.deps.onPass?.({
          phase: 'done',
          at: new Date(this.clock.now()).toISOString(),
          triggers: batch.kinds,
          durationMs: this.clock.now() - startedAt,
        });
    } catch (error) {
      if (this.stopping && error instanceof StoppedError) return;
      if (this.stopping) return void log.warn({ error: (error as Error).message }, 'pass cut short by stop');
      if (error instanceof ConfigError) {
        // Terminal until something changes: an edit (file event), a reload or the resync brings the next pass.
        log.error({ error: error.message }, 'pass failed on a configuration error; waiting for a change');
        return;
      }
      this.retryLater(`pass failed: ${(error as Error).message}`);
    } finally {
      this.later('resync', this.config.watch.resyncSeconds * 1000);
    }
  }

  /** Transient trouble (libvirtd restarting, a lock race): look again soon, backing off while it lasts. */
  private retryLater(why: string): void {
    this.deps.log.warn({ error: why, retryInMs: this.retryMs }, 'transient failure; retrying');
    this.later('retry', this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, TRANSIENT_RETRY.maxMs, this.config.watch.resyncSeconds * 1000);
  }

  /**
   * One pass as `watch` runs it: runner work is awaited, builds go on in the background (their
   * queue is shared across passes, so the concurrency limit holds) and ask for a pass when each is
   * promoted or discarded, so the runners can move to the new template at once.
   */
  private async pass(view: CompiledView, followingUp: boolean, absent: AbsentSource[]): Promise<void> {
    const deps = {
      ...this.runtime,
      config: this.config,
      log: this.deps.log,
      ownerToken: this.deps.ownerToken,
      stopping: this.stoppingSignal,
      queues: this.queues,
    };
    const pass = await runPass(view, deps, {
      inFlight: [...this.inFlight],
      absentSources: absent,
      configErrors: Object.fromEntries(this.configErrors),
    });
    for (const build of pass.builds) this.track(build, view);
    this.lastPassAt = this.runtime.clock().toISOString();
    this.followUps = followingUp ? this.followUps + 1 : 0;
    // The plan's own wake-up: one timer, replaced by every pass.
    if (pass.plan.requeue) {
      const at = Date.parse(pass.plan.requeue.at);
      this.deps.log.debug({ at: pass.plan.requeue.at, reason: pass.plan.requeue.reason }, 'requeue armed');
      // A few ms late rather than early: at the exact instant the answer may not have changed yet.
      this.later('requeue', at - this.runtime.clock().getTime() + 10);
    } else this.timers.clear('requeue');
    if (pass.results.some((r) => r.errorKind === 'transient')) this.retryLater('an action failed transiently');
    else this.retryMs = TRANSIENT_RETRY.firstMs;
    const progressed = pass.results.some((r) => r.ok);
    if (!progressed) return;
    if (this.followUps < MAX_FOLLOW_UPS) this.scheduler.request('follow-up');
    else
      this.deps.log.warn(
        { passes: this.followUps },
        'still changing after many passes in a row; waiting for a trigger',
      );
  }

  private track(build: StartedBuild, view: CompiledView): void {
    this.inFlight.add(build.name);
    build.done
      .then(
        (result) => {
          if (result.errorKind === 'transient') this.retryLater(`build ${build.name}: ${result.error}`);
          const inputsHash = view.profiles.find((p) => p.name === build.profile)?.inputsHash;
          if (result.errorKind === 'config' && inputsHash)
            this.configErrors.set(build.profile, { inputsHash, error: result.error ?? 'configuration error' });
          else if (result.ok) this.configErrors.delete(build.profile);
        },
        (error: unknown) => {
          if (!(error instanceof StoppedError))
            this.deps.log.error({ error: (error as Error).message, guest: build.name }, 'build crashed');
        },
      )
      .finally(() => {
        this.inFlight.delete(build.name);
        this.scheduler.request('build-done');
      });
  }

  private useConfig(config: HostConfig): void {
    this.config = config;
    this.relevant = relevance(config.sources, config.file);
    this.queues.builds.concurrency = config.concurrency.builds;
    this.queues.clones.concurrency = config.concurrency.clones;
    this.runtime = {
      ...this.runtime,
      ...backoffStores(config),
      ciOutages: new CiOutageStore(config.stateDir, config.ci.backoff),
      deregistrations: new DeregistrationStore(config.stateDir, config.ci.backoff),
    };
    this.scheduler.setDebounce(config.watch.debounceMs, maxWaitMs(config.watch.debounceMs));
    this.absence.setGrace(config.watch.absentGraceSeconds * 1000);
  }
}

/** Source dirs held within their grace period, with when it ends: the plan wakes the watch then. */
function absentSources(report: AbsenceReport): AbsentSource[] {
  return absentSourcesOf(report.held);
}
