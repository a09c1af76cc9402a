import type { HostConfig } from '../config/host-config.js';
import type { Observation } from '../hypervisor/hypervisor.js';
import { plan } from '../plan/plan.js';
import type { Plan } from '../plan/types.js';
import type { CompiledView } from '../sources/view.js';
import { apply, type ActionResult, type ApplyDeps } from './apply.js';

export const SURGE_FRACTION = 0.25;

/** What a pass needs: everything apply() does, less what the pass derives from the view and the config. */
export interface PassDeps extends Omit<ApplyDeps, 'profiles' | 'concurrency'> {
  config: HostConfig;
}

export interface PassResult {
  plan: Plan;
  observed: Observation;
  results: ActionResult[];
  builds: Promise<ActionResult[]>;
}

/** Observe, then plan: the read-only half of a pass (what `corral plan` prints). */
export async function observeAndPlan(
  view: CompiledView,
  deps: Pick<PassDeps, 'config' | 'hypervisor' | 'clock' | 'backoff' | 'ownerToken' | 'inFlight'>,
): Promise<{ plan: Plan; observed: Observation }> {
  const [observed, backoff] = await Promise.all([deps.hypervisor.observe(), deps.backoff.read()]);
  const policy = {
    prefix: deps.config.prefix,
    keepTemplates: deps.config.keepTemplates,
    backoff,
    surgeFraction: SURGE_FRACTION,
    ...(deps.ownerToken ? { ownerToken: deps.ownerToken } : {}),
    ...(deps.inFlight ? { inFlight: deps.inFlight } : {}),
  };
  return { plan: plan({ profiles: view.profiles, observed, now: deps.clock(), policy }), observed };
}

/** One level-triggered pass: recompute everything from what is observed now, then act. */
export async function runPass(view: CompiledView, deps: PassDeps): Promise<PassResult> {
  const started = deps.clock().getTime();
  const { plan: thePlan, observed } = await observeAndPlan(view, deps);
  const applied = await apply(thePlan.actions, {
    ...deps,
    profiles: new Map(view.profiles.map((p) => [p.name, p])),
    concurrency: deps.config.concurrency,
  });
  const counts: Record<string, number> = {};
  for (const a of thePlan.actions) counts[a.action] = (counts[a.action] ?? 0) + 1;
  deps.log.info(
    {
      generation: view.generation,
      durationMs: deps.clock().getTime() - started,
      guests: observed.guests.length,
      actions: counts,
      failed: applied.results.filter((r) => !r.ok).length,
      waits: thePlan.waits.length,
    },
    'pass done',
  );
  return { plan: thePlan, observed, ...applied };
}

/**
 * How long `reconcile --once` waits for runners to say ready when nothing else moves: a
 * distribution image with cloud-init takes minutes to boot under TCG on a busy host.
 */
export const READY_WAIT_MS = 10 * 60_000;

/**
 * `reconcile --once`: passes until nothing is left to do (a pass may make room for the next one:
 * a promoted template lets runners roll), waiting for the builds each pass starts, and for the
 * runners it started to say ready (a rollover destroys an old runner only once its replacement
 * is ready), up to READY_WAIT_MS without progress. Busy runners are not waited for: a later run
 * replaces them once they are idle.
 */
export async function converge(
  view: CompiledView,
  deps: PassDeps,
  maxPasses = 20,
): Promise<{ passes: number; results: ActionResult[]; last: Plan }> {
  const results: ActionResult[] = [];
  let productive = 0;
  let lastProgress = deps.clock().getTime();
  let stopped = false;
  void deps.stopping?.then(() => (stopped = true));
  for (let passes = 1; ; passes++) {
    const pass = await runPass(view, deps);
    const builds = await pass.builds;
    results.push(...pass.results, ...builds);
    if (pass.plan.actions.length === 0) {
      const waitMore = pass.plan.booting.length > 0 && deps.clock().getTime() - lastProgress < READY_WAIT_MS;
      if (!waitMore || stopped) return { passes, results, last: pass.plan };
      await Promise.race([deps.sleep(deps.pollMs), deps.stopping ?? new Promise(() => undefined)]);
      continue;
    }
    const progressed = pass.results.concat(builds).some((r) => r.ok);
    if (progressed) lastProgress = deps.clock().getTime();
    if (!progressed || ++productive >= maxPasses || stopped) {
      // Nothing more will move this run: report what the next pass would wait for, and why.
      return { passes, results, last: (await observeAndPlan(view, deps)).plan };
    }
  }
}
