import PQueue from 'p-queue';
import { errorKind, TransientError, type ErrorKind } from '../errors.js';
import { BACKGROUND_ACTIONS, inFlightKey, type Action } from '../plan/types.js';
import type { CompiledProfile } from '../sources/view.js';
import { buildTemplate, recordOrphan } from './build-template.js';
import type { ApplyDeps } from './apply-deps.js';
import { ForgeError } from '../ci/github/forge-error.js';
import type { PendingDeregistration } from '../plan/types.js';
import { parseReference } from '../oci/reference.js';
import { pullTemplate, pushTemplate } from './template-transfer.js';

export interface ActionResult {
  action: Action;
  ok: boolean;
  error?: string;
  /** What kind of failure (errors.ts): transient ones are worth a retry pass soon, config ones wait for an edit. */
  errorKind?: ErrorKind;
  durationMs: number;
}

/**
 * Background work this pass queued (a build, a pull, a publish): counts as in flight from the
 * moment it is queued until `done` settles.
 */
export interface StartedBuild {
  /** Its key in `Facts.inFlight` (plan/types.ts, inFlightKey). */
  name: string;
  profile: string;
  done: Promise<ActionResult>;
}

export interface Applied {
  /** Results of every non-build action, once they are all done. */
  results: ActionResult[];
  /** The builds this pass started; they finish in the background. */
  builds: StartedBuild[];
}

/** Resolves when every build has been promoted or discarded. */
export function buildsDone(builds: readonly StartedBuild[]): Promise<ActionResult[]> {
  return Promise.all(builds.map((b) => b.done));
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
  const builds: StartedBuild[] = actions
    .filter((a) => BACKGROUND_ACTIONS.includes(a.action))
    .map((a) => {
      const done = queues.builds.add(() => execute(a, deps), { throwOnTimeout: true });
      // Whoever awaits `done` sees a rejection; until then it must not count as unhandled.
      done.catch(() => undefined);
      return { name: inFlightKey(a), profile: a.profile, done };
    });
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
  let kind: ErrorKind | undefined;
  try {
    const failure = await perform(action, { ...deps, log });
    if (failure) [ok, error, kind] = [false, failure, 'command'];
  } catch (e) {
    [ok, error, kind] = [false, (e as Error).message, errorKind(e)];
  }
  const durationMs = deps.clock().getTime() - started.getTime();
  if (ok) log.info({ durationMs, reason: action.reason }, `${action.action} done`);
  else log.warn({ durationMs, error, errorKind: kind }, `${action.action} failed`);
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
  return { action, ok, ...(error ? { error, errorKind: kind } : {}), durationMs };
}

type PullAction = Extract<Action, { action: 'pull' }>;
type PublishAction = Extract<Action, { action: 'publish' }>;

/** A following profile's pull of the digest its tag resolved to, landed as the planned template (docs/oci-format.md). */
async function pullFollowed(action: PullAction, deps: ApplyDeps): Promise<string | undefined> {
  if (!deps.registry) throw new Error('no registry access wired into this pass');
  try {
    const pulled = await pullTemplate(
      { hypervisor: deps.hypervisor, ...deps.registry },
      parseReference(action.reference),
      {
        as: action.profile,
        inputsHash: action.inputsHash,
        gen: action.gen,
        concurrency: 4,
        ...(deps.bases ? { bases: deps.bases } : {}),
      },
    );
    deps.log.info(
      { template: pulled.template, reference: action.reference, present: pulled.present },
      'pulled followed template',
    );
    await deps.backoff.recordSuccess(action.profile);
    return undefined;
  } catch (err) {
    const reason = `pull of ${action.reference} failed: ${(err as Error).message}`;
    await deps.backoff.recordFailure(action.profile, reason, deps.clock());
    return reason;
  }
}

/**
 * `publish: {oci}`: push the live template to the tag. A failure is transient and backed off
 * (state/publish-backoff.json): the planner keeps the publish pending and retries it at `until`.
 */
async function publish(action: PublishAction, deps: ApplyDeps): Promise<void> {
  if (!deps.registry || !deps.publishes) throw new Error('no registry access wired into this pass');
  let digest: string;
  try {
    const stats = await pushTemplate(
      { hypervisor: deps.hypervisor, ...deps.registry },
      action.template,
      parseReference(action.reference),
      { concurrency: 4 },
    );
    digest = stats.digest;
    deps.log.info(
      { template: action.template, reference: action.reference, digest, uploadedBytes: stats.uploadedBytes },
      'published',
    );
  } catch (err) {
    const message = (err as Error).message;
    const entry = await deps.publishes.recordFailure(action.profile, message, deps.clock());
    throw new TransientError(
      `publish of ${action.template} to ${action.reference} failed: ${message}; retrying at ${entry.until}`,
      {
        cause: err,
      },
    );
  }
  await deps.publishes.recordSuccess(action.profile, {
    template: action.template,
    reference: action.reference,
    digest,
    at: deps.clock().toISOString(),
  });
}

/** Does the work of one action; returns a failure message for an expected failure (a failed build). */
async function perform(action: Action, deps: ApplyDeps): Promise<string | undefined> {
  const hv = deps.hypervisor;
  const profile = deps.profiles.get(action.profile);
  switch (action.action) {
    case 'build':
      if (!profile) throw new Error(`profile ${action.profile} is not in the compiled view`);
      return buildTemplate(action, profile, deps);
    case 'pull':
      return pullFollowed(action, deps);
    case 'publish':
      return void (await publish(action, deps));
    case 'promote':
      await hv.promote(action.guest, action.template);
      return void (await recordOrphan(action, 'ok', deps));
    case 'discard':
      await recordOrphan(action, 'failed', deps);
      return void (await hv.destroy(action.guest));
    case 'retire-template':
      return void (await hv.destroy(action.guest));
    case 'destroy-runner':
      await keepRunnerLog(action, deps);
      await hv.destroy(action.guest);
      return void (await deregister(action.guest, profile, deps));
    case 'create-runner':
      return void (await createRunner(action.guest, action, deps));
    case 'replace-runner':
      if (action.createFirst) {
        await createRunner(action.replacement, action, deps);
        await keepRunnerLog(action, deps);
        await hv.destroy(action.guest);
        await deregister(action.guest, profile, deps);
        return undefined;
      }
      await keepRunnerLog(action, deps);
      await hv.destroy(action.guest);
      await deregister(action.guest, profile, deps);
      await createRunner(action.replacement, action, deps);
      // A crash extends the profile's runner back-off; a runner that finished its job ends it.
      if (action.crashed) {
        const entry = await deps.runnerBackoff.recordFailure(action.profile, `${action.guest} crashed`, deps.clock());
        deps.log.warn({ failures: entry.failures, until: entry.until }, 'runner crashed; backing off its replacements');
      } else await deps.runnerBackoff.recordSuccess(action.profile);
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
  // Registration first: its material goes onto the runner's seed, which exists only at creation.
  let seedFiles: Record<string, string> = {};
  if (deps.ci && profile.ci) {
    try {
      // A name whose last registration is not deregistered yet is not registered again before it is.
      const pending = (await deps.deregistrations?.read())?.[name];
      if (pending) await retryDeregistration(name, pending, profile, deps, true);
      seedFiles = await deps.ci.register(name, profile);
    } catch (error) {
      if (error instanceof ForgeError && deps.ciOutages) {
        const outage = await deps.ciOutages.recordFailure(profile.name, error, deps.clock());
        deps.log.warn(
          { ci: error.system, retryAt: outage.retryAt },
          'CI registration failed; runner creation backs off',
        );
      }
      throw error;
    }
  }
  try {
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
      // Every runner of a CI profile gets its own seed (its name, its registration material, if any).
      ...(profile.ci ? { seedFiles } : {}),
    });
  } catch (error) {
    // A registration without a guest would wait for a job forever; the sweep would catch it, but later.
    await deregister(name, profile, deps);
    throw error;
  }
  if (deps.ci && profile.ci) await deps.ciOutages?.recordSuccess(profile.name);
}

/**
 * After a runner's guest is gone. GitHub: best effort, the sweep deletes what is left. A hook:
 * a failure is kept in the deregistration store, in the events with the hook's stderr, and
 * retried after a back-off (retryDeregistrations).
 */
async function deregister(runner: string, profile: CompiledProfile | undefined, deps: ApplyDeps): Promise<void> {
  if (!deps.ci || !profile?.ci) return;
  try {
    await deps.ci.deregister(runner, profile);
    await deps.deregistrations?.recordSuccess(runner);
  } catch (error) {
    const message = (error as Error).message;
    if (profile.ci.kind !== 'hook' || !deps.deregistrations)
      return void deps.log.warn({ runner, error: message }, 'could not deregister the runner');
    const entry = await deps.deregistrations.recordFailure(
      runner,
      { profile: profile.name, system: 'hook', error: message },
      deps.clock(),
    );
    deps.log.warn({ runner, error: message, retryAt: entry.retryAt }, 'deregister hook failed; retrying later');
    await deregisterEvent(
      runner,
      profile.name,
      `after its guest was destroyed; retry at ${entry.retryAt}`,
      deps,
      message,
    );
  }
}

async function deregisterEvent(
  runner: string,
  profile: string,
  reason: string,
  deps: Pick<ApplyDeps, 'events' | 'clock'>,
  error?: string,
): Promise<void> {
  await deps.events.append({
    time: deps.clock().toISOString(),
    action: 'deregister',
    guest: runner,
    profile,
    reason,
    ok: error === undefined,
    ...(error !== undefined ? { error } : {}),
    durationMs: 0,
  });
}

/**
 * One more try of a failed deregistration. Success drops it; failure backs it off further. With
 * `rethrow` (a runner of that name is about to be created) the failure is the caller's too.
 */
async function retryDeregistration(
  runner: string,
  pending: PendingDeregistration,
  profile: CompiledProfile | undefined,
  deps: Pick<ApplyDeps, 'ci' | 'deregistrations' | 'events' | 'clock' | 'log'>,
  rethrow = false,
): Promise<void> {
  if (!deps.ci || !deps.deregistrations) return;
  if (profile?.ci?.kind !== 'hook' || !profile.ci.deregister) {
    // The profile is gone or has no deregister hook any more: nothing is left that could run it.
    await deps.deregistrations.recordSuccess(runner);
    deps.log.warn(
      { runner, profile: pending.profile },
      'dropped a pending deregistration: its profile has no deregister hook now',
    );
    return void (await deregisterEvent(
      runner,
      pending.profile,
      'dropped: the profile has no deregister hook now',
      deps,
    ));
  }
  try {
    await deps.ci.deregister(runner, profile);
  } catch (error) {
    const message = (error as Error).message;
    const entry = await deps.deregistrations.recordFailure(
      runner,
      { profile: profile.name, system: 'hook', error: message },
      deps.clock(),
    );
    await deregisterEvent(runner, profile.name, `retry ${entry.failures}; next at ${entry.retryAt}`, deps, message);
    if (rethrow)
      throw new ForgeError(
        'hook',
        `deregistering the previous ${runner} still fails, so it is not registered again: ${message}`,
      );
    return;
  }
  await deps.deregistrations.recordSuccess(runner);
  deps.log.info({ runner, failures: pending.failures }, 'deregister hook succeeded on retry');
  await deregisterEvent(runner, profile.name, `retry after ${pending.failures} failure(s) succeeded`, deps);
}

/** Retries every failed deregistration whose back-off is over (a pass does this before planning). */
export async function retryDeregistrations(
  profiles: ReadonlyMap<string, CompiledProfile>,
  deps: Pick<ApplyDeps, 'ci' | 'deregistrations' | 'events' | 'clock' | 'log'>,
): Promise<void> {
  if (!deps.ci || !deps.deregistrations) return;
  const now = deps.clock().getTime();
  for (const [runner, pending] of Object.entries(await deps.deregistrations.read())) {
    if (Date.parse(pending.retryAt) > now) continue;
    await retryDeregistration(runner, pending, profiles.get(pending.profile), deps);
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
