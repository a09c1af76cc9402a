import { ConfigError } from '../../errors.js';
import type { ObservedGuest } from '../../hypervisor/hypervisor.js';
import { parseName, templateName } from '../../hypervisor/names.js';
import { newestFirst } from '../../plan/gen-time.js';
import { manifestDigest, type Manifest } from '../../state/build-records.js';
import { readCurrentView } from '../../state/compiled-store.js';
import { formatBytes } from '../../util/size.js';
import { EXIT, type Command } from '../command.js';
import { openRuntime } from '../../reconcile/runtime.js';

export const inspectCommand: Command = {
  name: 'inspect',
  summary:
    'Where a runner, template or profile came from: its template, the build manifest, every input file and the base.',
  usage: 'corral inspect <runner|template|profile> [--json]',
  optionsHelp: `  <runner>             a runner guest: follows it to the template it was cloned from
  <template>           a template (or a rebuild or kept-failed guest, or a template since retired
                       whose record is kept)
  <profile>            a profile name: its live template
Prints the build manifest (docs/images.md): profile, source, compiled generation, every input file
with sha256 and mode, the base (source, version, digest, URL), host, corral version, timing,
verdict, console log and the disk's backing chain; checks the manifest against the digest in the
template's metadata.`,
  options: {},
  positionals: 1,
  async run(ctx) {
    const target = ctx.positionals[0];
    if (!target) throw new ConfigError('inspect needs a runner, template or profile name; see "corral inspect --help"');
    const runtime = await openRuntime(ctx, { readOnly: true });
    const prefix = ctx.config.prefix;
    const observed = await runtime.hypervisor.observe();
    const byName = new Map(observed.guests.map((g) => [g.name, g]));
    const guest = byName.get(target);
    const parsed = parseName(prefix, target);
    let runner: ObservedGuest | undefined;
    let template: string;
    if (guest?.role === 'runner') {
      runner = guest;
      template = templateName(prefix, guest.profile, guest.meta.gen);
    } else if (parsed && parsed.role !== 'runner') {
      template = templateName(prefix, parsed.profile, parsed.gen);
    } else if (parsed?.role === 'runner') {
      throw new ConfigError(`no runner named ${target} exists`);
    } else {
      const view = await readCurrentView(ctx.config.stateDir);
      const profile = view?.profiles.find((p) => p.name === target);
      const templates = observed.guests.filter((g) => g.role === 'template' && g.profile === target).sort(newestFirst);
      if (!profile && templates.length === 0)
        throw new ConfigError(`"${target}" is neither a guest nor a profile (see "corral status")`);
      const live = templates[0];
      if (!live) throw new ConfigError(`profile ${target} has no template yet`);
      template = live.name;
    }
    const manifest = await runtime.records.read(template);
    if (!manifest)
      throw new ConfigError(
        `no build record for ${template} (built before corral kept manifests, or pruned beyond gc.keepBuildRecords)`,
      );
    const templateGuest = byName.get(template) ?? byName.get(manifest.rebuild);
    const recorded = templateGuest?.meta.manifest;
    const computed = manifestDigest(manifest);
    const verified = recorded === undefined ? null : recorded === computed;
    const result = {
      ...(runner
        ? { runner: { name: runner.name, state: runner.state, createdAt: runner.meta.createdAt, gen: runner.meta.gen } }
        : {}),
      template: { name: template, exists: templateGuest !== undefined, state: templateGuest?.state ?? null },
      manifestDigest: { computed, recorded: recorded ?? null, verified },
      manifestFile: runtime.records.manifestPath(template),
      manifest,
    };
    if (ctx.json) {
      ctx.io.out(`${JSON.stringify(result, null, 2)}\n`);
      return EXIT.ok;
    }
    ctx.io.out(formatInspect(result, runner));
    return EXIT.ok;
  },
};

function formatInspect(
  r: {
    template: { name: string; exists: boolean; state: string | null };
    manifestDigest: { computed: string; recorded: string | null; verified: boolean | null };
    manifestFile: string;
    manifest: Manifest;
  },
  runner: ObservedGuest | undefined,
): string {
  const m = r.manifest;
  const out: string[] = [];
  if (runner) out.push(`runner    ${runner.name}  ${runner.state}, cloned ${runner.meta.createdAt} from`);
  const check =
    r.manifestDigest.verified === null
      ? 'the guest carries no manifest digest'
      : r.manifestDigest.verified
        ? `manifest ${r.manifestDigest.computed.slice(0, 19)}… matches the guest's metadata`
        : `MANIFEST MISMATCH: the guest's metadata says ${r.manifestDigest.recorded}, the file hashes to ${r.manifestDigest.computed}`;
  out.push(
    `template  ${r.template.name}  ${r.template.exists ? (r.template.state ?? '') : 'gone (retired)'}; ${check}`,
    `profile   ${m.profile.name}  from source "${m.profile.source}" ${m.profile.file}${m.profile.overrides ? ` (overrides ${m.profile.overrides})` : ''}`,
    `          compiled generation ${m.profile.generation}, inputs ${m.profile.inputsHash}`,
    `built     ${m.startedAt} on ${m.host} by corral ${m.corral.version}: ${m.result.verdict}${m.result.durationMs !== undefined ? ` in ${(m.result.durationMs / 1000).toFixed(1)}s` : ''}${m.result.reason ? ` (${m.result.reason})` : ''}`,
    `          why: ${m.reason}`,
    `base      ${m.base.kind} ${m.base.url ?? m.base.file ?? ''}`,
  );
  if (m.base.checksums) out.push(`          listed in ${m.base.checksums}`);
  out.push(
    `          version ${m.base.version}${m.base.digest && m.base.digest !== m.base.version ? `, cached as ${m.base.digest}` : ''}`,
  );
  out.push(
    `guest     ${m.guest.cpus} cpu, ${m.guest.memoryMiB} MiB${m.guest.diskBytes ? `, disk ${formatBytes(m.guest.diskBytes)}` : ''}`,
  );
  out.push(`inputs    (relative to ${m.profile.dir})`);
  for (const f of m.inputs) out.push(`          ${f.mode ?? (f.executable ? '(+x)' : '    ')} ${f.sha256}  ${f.path}`);
  const chain = m.result.backingChain ?? [];
  if (chain.length > 0) out.push(`disk      ${chain[0]}`, ...chain.slice(1).map((c) => `          └ ${c}`));
  if (m.result.consoleLog) out.push(`console   ${m.result.consoleLog}`);
  if (m.result.keptAs) out.push(`kept as   ${m.result.keptAs}`);
  out.push(`manifest  ${r.manifestFile}`);
  return `${out.join('\n')}\n`;
}
