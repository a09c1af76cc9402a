import PQueue from 'p-queue';
import { HostError } from '../errors.js';
import type { Logger } from 'pino';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { Action } from '../plan/types.js';
import type { CompiledProfile } from '../sources/view.js';
import type { BackoffStore } from '../state/backoff-store.js';
import type { EventLog } from '../state/events.js';
import type { FailedBuildLogs, RunnerLogs } from '../state/build-logs.js';
import { runBuild, type BuildDeps } from './run-build.js';

export interface ApplyDeps extends BuildDeps {
  hypervisor: Hypervisor;
  log: Logger;
  events: EventLog;
  backoff: BackoffStore;
  /** Keeps the console log of failed builds (their guest and disks are destroyed). */
  failedLogs?: FailedBuildLogs;
  /** Keeps the console log of runners that are destroyed (the last N per profile). */
  runnerLogs?: RunnerLogs;
  profiles: Map<string, CompiledProfile>;
  concurrency: { builds: number; clones: number };
  /** Names of the builds being waited on; the planner treats our other rebuilds as orphans. */
  inFlight?: Set<string>;
  /** Keeps queues across passes in `watch`, so background builds respect the limit too. */
  queues?: { builds: PQueue; clones: PQueue };
}

export interface ActionResult {
  action: Action;
  ok: boolean;
  error?: string;
  durationMs: number;
}

export interface Applied {
  /** Results of every non-build action, once they are all done. */
  results: ActionResult[];
  /** Resolves when every build this pass started has been promoted or discarded. */
  builds: Promise<ActionResult[]>;
}

/** Phases run in an order that keeps the invariants: nothing is retired before its runners are gone. */
const PHASES: Action['action'][][] = [
  ['discard', 'promote'],
  ['destroy-runner'],
  ['create-runner', 'replace-runner'],
  ['retire-template'],
];

/**
 * Executes a plan. Each action is independent: one failure is recorded and the rest go on.
 * Builds start in this pass and finish in the background (`builds`); runner work waits for nothing.
 */
export async function apply(actions: Action[], deps: ApplyDeps): Promise<Applied> {
  const queues = deps.queues ?? {
    builds: new PQueue({ concurrency: deps.concurrency.builds }),
    clones: new PQueue({ concurrency: deps.concurrency.clones }),
  };
  const builds = Promise.all(
    actions
      .filter((a) => a.action === 'build')
      .map((a) => {
        // Counted from the moment it is queued: a pass planned meanwhile must not start a second build.
        deps.inFlight?.add(a.guest);
        return queues.builds
          .add(() => execute(a, deps), { throwOnTimeout: true })
          .finally(() => deps.inFlight?.delete(a.guest));
      }),
  );
  // Whoever awaits `builds` sees a rejection; until then it must not count as unhandled.
  builds.catch(() => undefined);
  const results: ActionResult[] = [];
  for (const kinds of PHASES) {
    const phase = actions.filter((a) => kinds.includes(a.action));
    results.push(
      ...(await Promise.all(phase.map((a) => queues.clones.add(() => execute(a, deps), { throwOnTimeout: true })))),
    );
  }
  return { results, builds };
}

async function execute(action: Action, deps: ApplyDeps): Promise<ActionResult> {
  const log = deps.log.child({ action: action.action, guest: action.guest, profile: action.profile });
  const started = deps.clock();
  let ok = true;
  let error: string | undefined;
  try {
    const failure = await perform(action, { ...deps, log });
    if (failure) [ok, error] = [false, failure];
  } catch (e) {
    [ok, error] = [false, (e as Error).message];
  }
  const durationMs = deps.clock().getTime() - started.getTime();
  if (ok) log.info({ durationMs, reason: action.reason }, `${action.action} done`);
  else log.warn({ durationMs, error }, `${action.action} failed`);
  await deps.events.append({
    time: started.toISOString(),
    action: action.action,
    guest: action.guest,
    profile: action.profile,
    reason: action.reason,
    ok,
    ...(error ? { error } : {}),
    durationMs,
  });
  return { action, ok, ...(error ? { error } : {}), durationMs };
}

/** Does the work of one action; returns a failure message for an expected failure (a failed build). */
async function perform(action: Action, deps: ApplyDeps): Promise<string | undefined> {
  const hv = deps.hypervisor;
  const profile = deps.profiles.get(action.profile);
  switch (action.action) {
    case 'build': {
      if (!profile) throw new Error(`profile ${action.profile} is not in the compiled view`);
      let result;
      try {
        result = await runBuild(profile, action.guest, action.gen, deps);
      } catch (err) {
        if (!(err instanceof HostError)) throw err;
        // The host failed, not the guest: no verdict is invented, the build is not counted as a
        // failed build, and the profile waits before trying again so a broken host is not hammered.
        await keepConsoleLog(action, deps);
        await hv.destroy(action.guest).catch(() => undefined);
        const entry = await deps.backoff.recordFailure(action.profile, err.message, deps.clock(), 'host');
        deps.log.error({ error: err.message, until: entry.until }, 'host problem; backing off');
        return `host problem: ${err.message}`;
      }
      if (result.abandoned) return 'abandoned at shutdown; the next pass discards it';
      if (result.verdict.ok) {
        await hv.promote(action.guest, action.template);
        await deps.backoff.recordSuccess(action.profile);
        return undefined;
      }
      // The live template is never touched: only the failed rebuild and its disks go.
      const log = await keepConsoleLog(action, deps);
      await hv.destroy(action.guest);
      const entry = await deps.backoff.recordFailure(action.profile, result.verdict.reason, deps.clock());
      deps.log.warn({ failures: entry.failures, until: entry.until }, 'backing off');
      return `${result.verdict.reason}${log ? ` (console log: ${log})` : ''}`;
    }
    case 'promote':
      return void (await hv.promote(action.guest, action.template));
    case 'discard':
      await keepConsoleLog(action, deps);
      return void (await hv.destroy(action.guest));
    case 'destroy-runner':
      await keepRunnerLog(action, deps);
      return void (await hv.destroy(action.guest));
    case 'retire-template':
      return void (await hv.destroy(action.guest));
    case 'create-runner':
      return void (await createRunner(action.guest, action, deps));
    case 'replace-runner':
      if (action.createFirst) {
        await createRunner(action.replacement, action, deps);
        await hv.destroy(action.guest);
      } else {
        await keepRunnerLog(action, deps);
        await hv.destroy(action.guest);
        await createRunner(action.replacement, action, deps);
      }
      return undefined;
  }
}

async function createRunner(
  name: string,
  action: { template: string; templateHash: string; profile: string },
  deps: ApplyDeps,
): Promise<void> {
  const profile = deps.profiles.get(action.profile);
  if (!profile) throw new Error(`profile ${action.profile} is not in the compiled view`);
  const gen = action.template.slice(action.template.lastIndexOf('@') + 1);
  await deps.hypervisor.createRunner({
    template: action.template,
    name,
    profile,
    meta: {
      profile: action.profile,
      gen,
      inputsHash: action.templateHash,
      baseVersion: profile.baseVersion,
      createdAt: deps.clock().toISOString(),
    },
  });
}

async function keepConsoleLog(action: Action, deps: ApplyDeps): Promise<string | undefined> {
  if (!deps.failedLogs) return undefined;
  try {
    const text = await deps.hypervisor.consoleLog(action.guest);
    return text === undefined ? undefined : await deps.failedLogs.save(action.profile, action.guest, text);
  } catch (error) {
    deps.log.warn({ error: (error as Error).message }, 'could not keep the console log of a failed build');
    return undefined;
  }
}

async function keepRunnerLog(action: Action, deps: ApplyDeps): Promise<void> {
  if (!deps.runnerLogs) return;
  try {
    const text = await deps.hypervisor.consoleLog(action.guest);
    if (text !== undefined && text !== '') await deps.runnerLogs.save(action.profile, action.guest, text, deps.clock());
  } catch (error) {
    deps.log.warn({ error: (error as Error).message }, "could not keep a runner's console log");
  }
}
