import { ConfigError, formatProblem } from '../../errors.js';
import { converge } from '../../reconcile/pass.js';
import { formatRequeue } from '../../plan/format.js';
import { FileDigests } from '../../sources/inputs.js';
import { acquireLock } from '../../state/lock.js';
import { refreshView } from '../../reconcile/refresh-view.js';
import { EXIT, type Command } from '../command.js';
import { parseName } from '../../hypervisor/names.js';
import { oneLine } from '../../util/escape.js';
import { absentSourcesOf, openRuntime } from '../../reconcile/runtime.js';
import { planCommand } from './plan.js';

export const reconcileCommand: Command = {
  name: 'reconcile',
  summary: 'Compile the sources and converge the guests in one run (for cron); waits for the builds it starts.',
  usage: 'corral reconcile --once [--dry-run] [--wait] [--keep-failed] [--json]',
  optionsHelp: `  --once               run until converged, then exit (the only mode; "corral watch" is the daemon)
  --dry-run            only print the plan (same as "corral plan")
  --wait               wait for the state-dir lock instead of exiting with code 75
  --keep-failed        set a failed rebuild aside as <prefix>-failed-<profile>@<gen> instead of
                       destroying it, to look inside (never promoted; "corral gc" removes it)

Signals: SIGTERM/SIGINT stop it after the running actions (builds in flight are left for the next
pass to discard); a second one exits at once (143/130), as a crash would.`,
  options: {
    once: { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    wait: { type: 'boolean' },
    'keep-failed': { type: 'boolean' },
  },
  async run(ctx) {
    if (ctx.args['dry-run']) return planCommand.run(ctx);
    if (!ctx.args.once)
      throw new ConfigError('reconcile needs --once (for a long-running reconciler use "corral watch")');
    const lock = await acquireLock(ctx.config.stateDir, {
      command: 'reconcile --once',
      wait: ctx.args.wait === true,
      log: ctx.log,
    });
    let stop = () => {};
    const stopping = new Promise<void>((resolve) => (stop = resolve));
    ctx.signals.onStop(
      () => {
        ctx.log.warn(
          'stop requested: finishing the current actions; builds in flight are left for the next pass to discard',
        );
        stop();
      },
      { secondSignalExits: true },
    );
    try {
      const refreshed = await refreshView(ctx.config, {
        validators: ctx.validators,
        digests: new FileDigests(),
        now: ctx.now(),
      });
      if (!refreshed.ok) {
        if (!refreshed.view)
          throw new ConfigError('the sources do not compile and no earlier view exists', refreshed.problems);
        ctx.log.error(
          { problems: refreshed.problems.map(formatProblem) },
          `the sources do not compile; converging to the last good view (generation ${refreshed.view.generation})`,
        );
      } else if (!refreshed.accepted && refreshed.view) {
        ctx.log.warn(
          `a source is missing; converging to the last good view (generation ${refreshed.view.generation}) until its grace ends`,
        );
      }
      const view = refreshed.view!;
      const runtime = await openRuntime(ctx, { keepFailed: ctx.args['keep-failed'] === true, holdsLock: true });
      const result = await converge(
        view,
        {
          config: ctx.config,
          log: ctx.log,
          ownerToken: lock.holder.token,
          stopping,
          ...runtime,
        },
        { absentSources: absentSourcesOf(refreshed.absence.holding) },
      );
      const failed = result.results.filter((r) => !r.ok);
      // A guest corral did not create sits on a name it needs: say so with a failing exit, every run, until removed.
      const squatters = result.last.unrecognized.filter((u) => parseName(ctx.config.prefix, u.name));
      if (ctx.json) {
        ctx.io.out(
          `${JSON.stringify({ ok: refreshed.ok && squatters.length === 0, generation: view.generation, passes: result.passes, results: result.results, waits: result.last.waits, requeueAt: result.last.requeue?.at ?? null, unrecognized: result.last.unrecognized, problems: refreshed.problems, kept: refreshed.absence.holding }, null, 2)}\n`,
        );
      } else {
        for (const r of result.results)
          ctx.io.out(
            `${r.ok ? 'ok    ' : 'FAILED'} ${r.action.action} ${r.action.guest}${r.error ? `: ${r.error}` : ''} (${(r.durationMs / 1000).toFixed(1)}s)\n`,
          );
        for (const w of result.last.waits) ctx.io.out(`waiting ${w.profile}: ${w.reason}\n`);
        for (const u of result.last.unrecognized) ctx.io.out(`? ${oneLine(u.name)}: ${u.reason} (left alone)\n`);
        if (result.last.requeue)
          ctx.io.out(`next: ${formatRequeue(result.last.requeue, ctx.now())} (${result.last.requeue.reason})\n`);
        ctx.io.out(
          `generation ${view.generation}: ${result.results.length} action(s) in ${result.passes} pass(es), ${failed.length} failed\n`,
        );
      }
      if (!refreshed.ok) {
        for (const p of refreshed.problems) ctx.io.err(`${formatProblem(p)}\n`);
        return EXIT.error;
      }
      for (const p of refreshed.problems) ctx.io.err(`warning: ${formatProblem(p)}\n`);
      if (squatters.length > 0) {
        ctx.io.err(
          `corral reconcile: ${squatters.length} guest(s) not created by corral hold corral's names (${squatters.map((u) => oneLine(u.name)).join(', ')}); remove or rename them\n`,
        );
        return EXIT.error;
      }
      return EXIT.ok;
    } finally {
      await lock.release();
    }
  },
};
