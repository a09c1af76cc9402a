import { formatProblem } from '../../errors.js';
import { compileSources } from '../../sources/compile.js';
import { FileDigests } from '../../sources/inputs.js';
import { EXIT, type Command } from '../command.js';

export const validateCommand: Command = {
  name: 'validate',
  summary: 'Check every profile source and the merge; print all problems (exit 0 valid, 1 invalid).',
  usage: 'corral validate [--json]',
  optionsHelp: '',
  options: {},
  async run(ctx) {
    const result = await compileSources(ctx.config.sources, { validators: ctx.validators, digests: new FileDigests() });
    if (ctx.json) {
      ctx.io.out(
        `${JSON.stringify({ ok: result.ok, problems: result.problems, profiles: result.view?.profiles.map((p) => p.name) ?? [] }, null, 2)}\n`,
      );
    } else {
      for (const p of result.problems)
        ctx.io.err(`${p.severity === 'warning' ? 'warning: ' : ''}${formatProblem(p)}\n`);
      const errors = result.problems.filter((p) => p.severity === 'error').length;
      if (result.ok)
        ctx.io.out(`ok: ${result.view?.profiles.length ?? 0} profile(s) from ${ctx.config.sources.length} source(s)\n`);
      else ctx.io.err(`${errors} error(s)\n`);
    }
    return result.ok ? EXIT.ok : EXIT.error;
  },
};
