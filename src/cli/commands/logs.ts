import { readFile } from 'node:fs/promises';
import { ConfigError } from '../../errors.js';
import { parseName, templateName } from '../../hypervisor/names.js';
import { EXIT, type Command } from '../command.js';
import { openRuntime } from '../../reconcile/runtime.js';

export const logsCommand: Command = {
  name: 'logs',
  summary: 'The serial console log of a build or runner; -f follows it while the guest runs.',
  usage: 'corral logs <guest> [-f]',
  optionsHelp: `  <guest>              a runner, rebuild, template or kept-failed guest; a build that is gone
                       (failed, discarded or retired) is read from its record in state/templates/
  -f, --follow         keep printing new output until the guest stops (or Ctrl-C)`,
  options: { follow: { type: 'boolean', short: 'f' } },
  positionals: 1,
  async run(ctx) {
    const name = ctx.positionals[0];
    if (!name) throw new ConfigError('logs needs a guest name; see "corral logs --help"');
    const runtime = await openRuntime(ctx, { readOnly: true });
    const prefix = ctx.config.prefix;
    const parsed = parseName(prefix, name);
    if (!parsed) throw new ConfigError(`${name} is not a corral guest name (${prefix}-runner-…, ${prefix}-template-…)`);
    const record =
      parsed.role === 'runner'
        ? undefined
        : runtime.records.consolePath(templateName(prefix, parsed.profile, parsed.gen));
    const read = async (): Promise<string | undefined> =>
      (await runtime.hypervisor.consoleLog(name).catch(() => undefined)) ??
      (record ? await readFile(record, 'utf8').catch(() => undefined) : undefined);
    const running = async () =>
      (await runtime.hypervisor.observe()).guests.find((g) => g.name === name)?.state === 'running';
    let text = await read();
    if (text === undefined) throw new ConfigError(`no console log for ${name} (no such guest, and no build record)`);
    ctx.io.out(text);
    if (!ctx.args.follow) return EXIT.ok;
    let stop = false;
    ctx.signals.onStop(() => (stop = true));
    let shown = text.length;
    while (!stop) {
      const alive = await running();
      text = (await read()) ?? '';
      // A log rewritten from the start (a runner recreated under the same name) is shown again whole.
      if (text.length < shown) shown = 0;
      if (text.length > shown) ctx.io.out(text.slice(shown));
      shown = text.length;
      if (!alive) break;
      await runtime.sleep(500);
    }
    return EXIT.ok;
  },
};
