import { ConfigError, formatProblem } from '../../errors.js';
import { FileDigests } from '../../sources/inputs.js';
import { acquireLock } from '../../state/lock.js';
import { refreshView } from '../../reconcile/refresh-view.js';
import { EXIT, type Command } from '../command.js';

export const compileCommand: Command = {
  name: 'compile',
  summary: 'Validate the sources and atomically swap in the compiled view (a new generation only when inputs changed).',
  usage: 'corral compile [--json] [--wait]',
  optionsHelp: '  --wait               wait for the state-dir lock instead of failing fast',
  options: { wait: { type: 'boolean' } },
  async run(ctx) {
    const lock = await acquireLock(ctx.config.stateDir, {
      command: 'compile',
      wait: ctx.args.wait === true,
      log: ctx.log,
    });
    try {
      const result = await refreshView(ctx.config, {
        validators: ctx.validators,
        digests: new FileDigests(),
        now: ctx.now(),
      });
      if (!result.ok)
        throw new ConfigError(
          `compile failed; ${result.view ? `generation ${result.view.generation} stays current` : 'no view is current yet'}`,
          result.problems,
        );
      const view = result.view!;
      for (const p of result.problems) ctx.io.err(`warning: ${formatProblem(p)}\n`);
      const kept = result.accepted
        ? ''
        : ` kept: a source is missing; generation ${view.generation} stays current until its grace ends`;
      if (ctx.json)
        ctx.io.out(
          `${JSON.stringify({ generation: view.generation, hash: view.hash, changed: result.changed, accepted: result.accepted, profiles: view.profiles.length, kept: result.absence.holding }, null, 2)}\n`,
        );
      else
        ctx.io.out(
          `generation ${view.generation} ${view.hash}${result.changed ? '' : ' (unchanged)'}: ${view.profiles.length} profile(s)${kept ? `;${kept}` : ''}\n`,
        );
      return EXIT.ok;
    } finally {
      await lock.release();
    }
  },
};
