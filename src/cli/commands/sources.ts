import { relative } from 'node:path';
import { formatProblem, ConfigError } from '../../errors.js';
import { compileSources } from '../../sources/compile.js';
import { FileDigests } from '../../sources/inputs.js';
import { EXIT, type Command } from '../command.js';

export const sourcesCommand: Command = {
  name: 'sources',
  summary: 'Show the merged profiles with their origin, what they override or mask, and their inputs hash.',
  usage: 'corral sources [--json]',
  optionsHelp: '',
  options: {},
  async run(ctx) {
    const result = await compileSources(ctx.config.sources, { validators: ctx.validators, digests: new FileDigests() });
    if (!result.ok || !result.view) throw new ConfigError('the sources do not compile', result.problems);
    const rows = result.view.profiles.map((p) => ({
      name: p.name,
      source: p.source,
      file: p.file,
      runners: p.runners,
      inputsHash: p.inputsHash,
      ...(p.overrides ? { overrides: p.overrides } : {}),
    }));
    if (ctx.json) {
      ctx.io.out(
        `${JSON.stringify({ sources: ctx.config.sources, profiles: rows, masked: result.view.masked, problems: result.problems }, null, 2)}\n`,
      );
      return EXIT.ok;
    }
    const cwd = process.cwd();
    const show = (f: string) => (f.startsWith(cwd) ? relative(cwd, f) : f);
    ctx.io.out(
      `sources (in order):\n${ctx.config.sources.map((s, i) => `  ${i + 1}. ${s.name}  ${'path' in s ? show(s.path) : `${show(s.glob)} (glob)`}\n`).join('')}`,
    );
    ctx.io.out(`profiles:\n`);
    for (const r of rows) {
      ctx.io.out(
        `  ${r.name}  [${r.source}] ${show(r.file)}  runners=${r.runners}  inputs=${r.inputsHash.slice(7, 19)}\n`,
      );
      if (r.overrides) ctx.io.out(`    [OVERRIDDEN] ${show(r.overrides)}\n`);
    }
    for (const m of result.view.masked)
      ctx.io.out(`  ${m.name}  [MASKED] by ${show(m.file)}${m.masks ? `, hides ${show(m.masks)}` : ''}\n`);
    for (const p of result.problems) ctx.io.err(`warning: ${formatProblem(p)}\n`);
    return EXIT.ok;
  },
};
