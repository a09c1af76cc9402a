import { ConfigError } from '../../errors.js';
import { EXIT, type Command } from '../command.js';
import { openRuntime } from '../../reconcile/runtime.js';

export const historyCommand: Command = {
  name: 'history',
  summary: "A profile's builds, oldest first: result, duration, base version, and why each was built.",
  usage: 'corral history <profile> [--json]',
  optionsHelp: `  <profile>            the profile whose build records (state/templates/*/manifest.json) to list
Failed builds are kept up to gc.keepFailedBuilds per profile, successful ones whose template is
gone up to gc.keepBuildRecords; a live template's record is never pruned.`,
  options: {},
  positionals: 1,
  async run(ctx) {
    const profile = ctx.positionals[0];
    if (!profile) throw new ConfigError('history needs a profile name; see "corral history --help"');
    const runtime = await openRuntime(ctx, { readOnly: true });
    const names = new Set((await runtime.hypervisor.observe()).guests.map((g) => g.name));
    const builds = (await runtime.records.list(profile)).map((m) => ({
      template: m.template,
      live: names.has(m.template),
      startedAt: m.startedAt,
      finishedAt: m.result.finishedAt ?? null,
      durationMs: m.result.durationMs ?? null,
      verdict: m.result.verdict,
      failure: m.result.reason ?? null,
      reason: m.reason,
      baseVersion: m.base.version,
      generation: m.profile.generation,
      ...(m.result.keptAs ? { keptAs: m.result.keptAs } : {}),
      consoleLog: m.result.consoleLog ?? null,
    }));
    if (ctx.json) {
      ctx.io.out(`${JSON.stringify({ profile, builds }, null, 2)}\n`);
      return EXIT.ok;
    }
    if (builds.length === 0) {
      ctx.io.out(`no builds recorded for profile ${profile}\n`);
      return EXIT.ok;
    }
    const lines = builds.map((b) => {
      const duration = b.durationMs === null ? '      -' : `${(b.durationMs / 1000).toFixed(1).padStart(6)}s`;
      const verdict = b.verdict === 'ok' ? 'ok    ' : b.verdict === 'running' ? 'running' : 'FAILED';
      const outcome = b.failure ? `: ${b.failure}` : '';
      return `${b.startedAt}  ${verdict} ${duration}  base ${b.baseVersion.slice(7, 19) || '-'}  ${b.template}${b.live ? ' (live)' : ''}${b.keptAs ? ` (kept as ${b.keptAs})` : ''}\n    why: ${b.reason}${outcome ? `\n    result${outcome}` : ''}`;
    });
    ctx.io.out(`${lines.join('\n')}\n`);
    return EXIT.ok;
  },
};
