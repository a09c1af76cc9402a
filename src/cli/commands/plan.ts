import { observeAndPlan } from '../../reconcile/pass.js';
import { formatProblem } from '../../errors.js';
import { formatPlan, planToJson } from '../../plan/format.js';
import { describeHeld } from '../../state/source-absence.js';
import { oneLine } from '../../util/escape.js';
import { EXIT, type Command } from '../command.js';
import { absentSourcesOf, liveOwnerToken, openRuntime, previewView } from '../../reconcile/runtime.js';

export const planCommand: Command = {
  name: 'plan',
  summary: 'Show what a reconcile pass would do now, and why; changes nothing.',
  usage: 'corral plan [--json] [--detailed-exitcode]',
  optionsHelp: '  --detailed-exitcode  exit 0 when in sync, 2 when changes are pending, 1 on error',
  options: { 'detailed-exitcode': { type: 'boolean' } },
  async run(ctx) {
    const { view, generation, held } = await previewView({
      ...ctx,
      warn: (p) =>
        ctx.io.err(`warning: ${formatProblem(p)}
`),
    });
    const runtime = await openRuntime(ctx, { readOnly: true });
    const ownerToken = await liveOwnerToken(ctx.config.stateDir);
    const { plan } = await observeAndPlan(
      view,
      { config: ctx.config, ...runtime, ...(ownerToken ? { ownerToken } : {}) },
      { absentSources: absentSourcesOf(held) },
    );
    const kept = held.map((h) => ({
      source: h.source,
      dir: h.dir,
      since: h.since.toISOString(),
      graceUntil: h.graceUntil.toISOString(),
    }));
    if (ctx.json) ctx.io.out(`${JSON.stringify({ ...planToJson(plan, generation), kept }, null, 2)}\n`);
    else ctx.io.out(`${held.map((h) => `  ${oneLine(describeHeld(h))}\n`).join('')}${formatPlan(plan, ctx.now())}`);
    return ctx.args['detailed-exitcode'] && plan.actions.length > 0 ? EXIT.changes : EXIT.ok;
  },
};
