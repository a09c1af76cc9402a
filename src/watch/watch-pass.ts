import { runPass, type PassDeps } from '../apply/pass.js';
import type { CompiledView } from '../sources/view.js';
import { clampTimerMs } from '../util/duration.js';
import { StoppedError } from './queues.js';

/**
 * One pass as `watch` runs it: runner work is awaited, builds go on in the background (their
 * queue is shared across passes, so the concurrency limit holds) and call `buildsDone` when they
 * are all promoted or discarded, so the runners can move to the new template at once.
 * Returns whether any action succeeded (then another pass may have more to do: a rolling replace),
 * and whether runners are booting or draining (then a pass soon sees what they say next).
 */
export async function watchPass(
  view: CompiledView,
  deps: PassDeps,
  buildsDone: () => void,
): Promise<{ progressed: boolean; guestsPending: boolean }> {
  const pass = await runPass(view, deps);
  if (pass.plan.actions.some((a) => a.action === 'build')) {
    pass.builds.then(buildsDone, (error: unknown) => {
      if (!(error instanceof StoppedError)) deps.log.error({ error: (error as Error).message }, 'build crashed');
    });
  }
  return {
    progressed: pass.results.some((r) => r.ok),
    guestsPending: pass.plan.booting.length > 0 || pass.plan.draining.length > 0,
  };
}

/** Named one-shot timers; setting one again replaces it. */
export class Timers<K> {
  private readonly timers = new Map<K, NodeJS.Timeout>();
  private closed = false;

  set(key: K, ms: number, fn: () => void): void {
    if (this.closed) return;
    clearTimeout(this.timers.get(key));
    this.timers.set(
      key,
      setTimeout(() => {
        this.timers.delete(key);
        fn();
      }, clampTimerMs(ms)),
    );
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }
}
