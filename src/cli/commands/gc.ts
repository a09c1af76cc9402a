import { readCurrentView } from '../../state/compiled-store.js';
import { acquireLock } from '../../state/lock.js';
import { formatBytes } from '../../util/size.js';
import { EXIT, type Command } from '../command.js';
import { openRuntime } from '../../reconcile/runtime.js';

export const gcCommand: Command = {
  name: 'gc',
  summary: 'Collect garbage now: kept-failed guests, unused base versions and disks, stale downloads, old records.',
  usage: 'corral gc [--dry-run] [--wait] [--json]',
  optionsHelp: `  --dry-run            list what would go, remove nothing
  --wait               wait for the state-dir lock instead of exiting with code 75
Never removes a file any defined guest uses, following every disk's qcow2 backing chain (a runner
still on an old template keeps that template's disk and its base). Keeps the base versions the
profiles want now and the newest gc.keepBaseVersions built per profile. Passes collect the same
way at their end; "corral gc" also removes every guest kept by --keep-failed, whatever its age.`,
  options: { 'dry-run': { type: 'boolean' }, wait: { type: 'boolean' } },
  async run(ctx) {
    const lock = await acquireLock(ctx.config.stateDir, { command: 'gc', wait: ctx.args.wait === true, log: ctx.log });
    try {
      const view = await readCurrentView(ctx.config.stateDir);
      const runtime = await openRuntime(ctx);
      // The versions the profiles want now (a checksum list that cannot be read keeps its last version).
      const { profiles } = await runtime.resolver.resolve(view?.profiles ?? []);
      const dryRun = ctx.args['dry-run'] === true;
      const report = await runtime.gc({ dryRun, allFailedGuests: true }, undefined, profiles);
      if (ctx.json) {
        ctx.io.out(`${JSON.stringify(report, null, 2)}\n`);
        return EXIT.ok;
      }
      const verb = dryRun ? 'would remove' : 'removed';
      const lines = [
        ...report.guests.map((g) => `${verb} guest ${g.name} (${g.reason})`),
        ...report.files.map((f) => `${verb} ${f.path} (${formatBytes(f.bytes)}; ${f.reason})`),
        ...report.records.map((r) => `${verb} build record ${r}`),
        ...report.generations.map((g) => `${verb} compiled generation ${g}`),
      ];
      lines.push(
        lines.length === 0
          ? 'nothing to collect'
          : `${dryRun ? 'would free' : 'freed'} ${formatBytes(report.freedBytes)} in imagesDir`,
      );
      ctx.io.out(`${lines.join('\n')}\n`);
      return EXIT.ok;
    } finally {
      await lock.release();
    }
  },
};
