import { observeAndPlan } from '../../reconcile/pass.js';
import { formatProblem } from '../../errors.js';
import { formatRequeue } from '../../plan/format.js';
import { createdAt, newestFirst } from '../../plan/gen-time.js';
import { conditionOf } from '../../plan/runners.js';
import { readCurrentView } from '../../state/compiled-store.js';
import { isAlive, readLockHolder } from '../../state/lock.js';
import { readAbsenceRecord } from '../../state/source-absence.js';
import { readWatchStatus } from '../../state/watch-status.js';
import { formatDuration } from '../../util/duration.js';
import { freeBytesAt } from '../../images/floor.js';
import { formatBytes } from '../../util/size.js';
import { oneLine } from '../../util/escape.js';
import { EXIT, type Command } from '../command.js';
import { openRuntime, previewView } from '../../reconcile/runtime.js';
import { profileCiSummary, readCiFacts } from '../../ci/ci-status.js';

export const statusCommand: Command = {
  name: 'status',
  summary:
    'Per profile: live template, runners ready/desired, last result, build in flight, and why anything is pending.',
  usage: 'corral status [--json]',
  optionsHelp: '',
  options: {},
  async run(ctx) {
    // A damaged stored view is no view: the preview says so (once) and shows the sources as they are.
    const view =
      (await readCurrentView(ctx.config.stateDir)) ??
      (await previewView({ ...ctx, warn: (p) => ctx.io.err(`warning: ${formatProblem(p)}\n`) })).view;
    const runtime = await openRuntime(ctx, { readOnly: true });
    // The absence record is shared by watch and cron: a source held under cron shows here too.
    const graceMs = ctx.config.watch.absentGraceSeconds * 1000;
    const absent = Object.entries((await readAbsenceRecord(ctx.config.stateDir)).absent).map(([dir, e]) => ({
      dir,
      source: e.source,
      since: e.since,
      graceUntil: new Date(Date.parse(e.since) + graceMs).toISOString(),
    }));
    const holder = await readLockHolder(ctx.config.stateDir);
    const live = holder && isAlive(holder) ? holder : undefined;
    const {
      plan,
      observed,
      profiles: resolved,
    } = await observeAndPlan(
      view,
      { config: ctx.config, ...runtime, ...(live ? { ownerToken: live.token } : {}) },
      { absentSources: absent.map((a) => ({ dir: a.dir, until: a.graceUntil })) },
    );
    const events = await runtime.events.recent(2000);
    const ciFacts = await readCiFacts(ctx.config, ctx.now());
    const watchFile = live ? await readWatchStatus(ctx.config.stateDir) : undefined;
    // Only the live watch's own report counts: one left by a crashed watch is stale.
    const watch = watchFile?.pid === live?.pid ? watchFile : undefined;
    const now = ctx.now();
    const profiles = resolved.map((p) => {
      const guests = observed.guests.filter((g) => g.profile === p.name);
      const templates = guests.filter((g) => g.role === 'template').sort(newestFirst);
      const liveTemplate = templates.find((t) => t.meta.inputsHash === p.inputsHash) ?? templates[0];
      const runners = guests.filter((g) => g.role === 'runner').sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
      const running = runners.filter((r) => r.state === 'running');
      const building = guests.find((g) => g.role === 'rebuild');
      const lastOf = (action: string) => events.filter((e) => e.profile === p.name && e.action === action).pop();
      // A follower's "build" is a pull (docs/oci-format.md).
      const last = lastOf(p.template ? 'pull' : 'build');
      const published = p.publish ? lastOf('publish') : undefined;
      return {
        name: p.name,
        source: p.source,
        base: { kind: p.base.kind, version: p.baseVersion || null },
        template: liveTemplate
          ? {
              name: liveTemplate.name,
              gen: liveTemplate.gen,
              current: liveTemplate.meta.inputsHash === p.inputsHash,
              ageSeconds: Math.round((now.getTime() - createdAt(liveTemplate).getTime()) / 1000),
              baseVersion: liveTemplate.meta.baseVersion,
            }
          : null,
        runners: {
          // What the guests said on their status channel: only a ready (or idle) runner is capacity.
          ready: running.filter((r) => conditionOf(r) === 'ready').length,
          booting: running.filter((r) => conditionOf(r) === 'booting').length,
          busy: running.filter((r) => conditionOf(r) === 'busy').length,
          outdated: running.filter((r) => r.meta.gen !== liveTemplate?.gen).length,
          running: running.length,
          desired: p.runners,
          each: runners.map((r) => ({
            name: r.name,
            state: r.state === 'running' ? conditionOf(r) : r.state,
            gen: r.meta.gen,
          })),
        },
        building: building
          ? {
              name: building.name,
              state: building.state,
              forSeconds: Math.round((now.getTime() - createdAt(building).getTime()) / 1000),
            }
          : null,
        lastBuild: last ? { time: last.time, ok: last.ok, ...(last.error ? { error: last.error } : {}) } : null,
        lastPublish: published
          ? {
              time: published.time,
              ok: published.ok,
              template: published.guest,
              ...(published.error ? { error: published.error } : {}),
            }
          : null,
        ci: profileCiSummary(p, runners, ciFacts),
        pending: plan.waits
          .filter((w) => w.profile === p.name)
          .map((w) => ({ kind: w.kind, reason: w.reason, ...(w.until ? { until: w.until } : {}) })),
        changes: plan.actions.filter((a) => a.profile === p.name).length,
      };
    });
    const free = await freeBytesAt(ctx.config.imagesDir);
    const disk = {
      imagesDir: ctx.config.imagesDir,
      freeBytes: free ?? null,
      minFreeBytes: ctx.config.minFreeBytes,
      belowFloor: free !== undefined && free < ctx.config.minFreeBytes,
    };
    const result = {
      generation: view.generation,
      disk,
      hypervisor: runtime.hypervisor.kind,
      lock: live ? { pid: live.pid, command: live.command, since: live.startedAt } : null,
      problems: watch?.problems ?? [],
      watch: watch ? { lastPassAt: watch.lastPassAt ?? null, absentSince: watch.absentSince } : null,
      absent,
      profiles,
      unrecognized: observed.unrecognized,
      requeue: plan.requeue ?? null,
    };
    if (ctx.json) {
      ctx.io.out(`${JSON.stringify(result, null, 2)}\n`);
      return EXIT.ok;
    }
    const out: string[] = [
      `generation ${view.generation} · ${result.hypervisor}${live ? ` · locked by pid ${live.pid} (${live.command})` : ''}`,
    ];
    for (const p of profiles) {
      const t = p.template
        ? `${p.template.name} (${formatDuration(p.template.ageSeconds)} old${p.template.current ? '' : ', OUTDATED'})`
        : 'no template';
      out.push(
        `${p.name}  template: ${t}  runners: ${p.runners.ready}/${p.runners.desired} ready${runnerDetail(p.runners)}`,
      );
      if (p.runners.each.length > 0)
        out.push(
          `  runners: ${p.runners.each.map((r) => `${r.name} ${r.state}${r.gen === p.template?.gen ? '' : ' (outdated)'}`).join(', ')}`,
        );
      if (p.building)
        out.push(`  building: ${p.building.name} (${p.building.state}, ${formatDuration(p.building.forSeconds)})`);
      const work = resolved.find((r) => r.name === p.name)?.template ? 'pull' : 'build';
      if (p.lastBuild)
        out.push(`  last ${work}: ${p.lastBuild.ok ? 'ok' : `FAILED: ${p.lastBuild.error}`} at ${p.lastBuild.time}`);
      if (p.lastPublish)
        out.push(
          `  last publish: ${p.lastPublish.template} ${p.lastPublish.ok ? 'ok' : `FAILED: ${p.lastPublish.error}`} at ${p.lastPublish.time}`,
        );
      if (p.ci) {
        out.push(`  ci: ${p.ci.system}${p.ci.failing ? `, FAILING: ${p.ci.failing}` : ''}`);
        for (const r of p.ci.runners) out.push(oneLine(`    ${r.name}: ${r.state}`));
        for (const o of p.ci.orphans) out.push(oneLine(`    ${o}: orphaned registration (deleted on the next pass)`));
      }
      for (const w of p.pending)
        out.push(`  pending: ${w.reason}${w.until ? ` (${formatRequeue({ at: w.until, reason: w.kind }, now)})` : ''}`);
      if (p.changes > 0) out.push(`  ${p.changes} change(s) pending (see "corral plan")`);
    }
    if (disk.belowFloor)
      out.push(
        `imagesDir ${disk.imagesDir}: ${formatBytes(disk.freeBytes ?? 0)} free, below minFreeSpace ${formatBytes(disk.minFreeBytes)}: garbage is collected first, then builds and downloads are refused`,
      );
    if (watch?.lastPassAt) out.push(`watch: last pass at ${watch.lastPassAt}`);
    if (plan.requeue) out.push(`next look by itself: ${formatRequeue(plan.requeue, now)} (${plan.requeue.reason})`);
    for (const a of absent)
      out.push(
        oneLine(`source "${a.source}" ${a.dir} is absent since ${a.since}; its profiles stay until ${a.graceUntil}`),
      );
    for (const u of observed.unrecognized) out.push(`? ${oneLine(u.name)}: ${oneLine(u.reason)} (left alone)`);
    if (result.problems.length > 0)
      out.push(
        `watch is using the last good view; the sources have problems:`,
        ...result.problems.map((pr) => `  ${formatProblem(pr)}`),
      );
    ctx.io.out(`${out.join('\n')}\n`);
    return EXIT.ok;
  },
};

function runnerDetail(r: { booting: number; busy: number; running: number; ready: number }): string {
  const parts = [r.booting > 0 ? `${r.booting} booting` : '', r.busy > 0 ? `${r.busy} busy` : ''].filter(Boolean);
  return parts.length > 0 ? ` (${parts.join(', ')})` : '';
}
