import type { Problem } from '../errors.js';
import type { HostConfig } from '../config/host-config.js';
import { compileSources, type CompileDeps } from '../sources/compile.js';
import type { CompiledView } from '../sources/view.js';
import { damageProblem, loadCurrentView, storeView } from '../state/compiled-store.js';
import {
  describeExpired,
  describeHeld,
  judgeAbsence,
  knownSourcesOf,
  readAbsenceRecord,
  writeAbsenceRecord,
  type AbsenceJudgement,
} from '../state/source-absence.js';

export interface Refreshed {
  /** The view to act on: the new one, or the last good one when compiling failed (undefined if none ever compiled). */
  view?: CompiledView;
  problems: Problem[];
  /** True when the sources compiled cleanly. */
  ok: boolean;
  /** True when the fresh view was taken (stored, or the one to preview); false keeps the last good one. */
  accepted: boolean;
  /** True when a new generation was written. */
  changed: boolean;
  absent: string[];
  /** Known source dirs that are missing: held within their grace, or expired. */
  absence: AbsenceJudgement;
}

export interface RefreshDeps extends CompileDeps {
  now: Date;
  /** `plan`, `status`, `--dry-run`: judge and compile, but write nothing (no view, no absence record). */
  readOnly?: boolean;
}

/**
 * Compiles every source and, when clean, swaps it in; a failed compile leaves `current` untouched.
 * A source dir the current view has profiles from that is missing now is held for
 * `watch.absentGrace` (recorded in the state dir, so cron runs honour it too): while held, the last
 * good view stays, so nothing of it is removed.
 */
export async function refreshView(config: HostConfig, deps: RefreshDeps): Promise<Refreshed> {
  const compilation = await compileSources(config.sources, deps);
  const loaded = await loadCurrentView(config.stateDir);
  const damage = loaded.damage ? [damageProblem(loaded.damage)] : [];
  const configuredNames = new Set(config.sources.map((s) => s.name));
  const absence = judgeAbsence({
    known: knownSourcesOf(loaded.view),
    present: new Set(compilation.present),
    configured: (k) => configuredNames.has(k.source),
    record: await readAbsenceRecord(config.stateDir),
    now: deps.now,
    graceMs: config.watch.absentGraceSeconds * 1000,
  });
  if (absence.changed && !deps.readOnly) await writeAbsenceRecord(config.stateDir, absence.record);
  const absenceProblems: Problem[] = [
    ...absence.holding.map((h): Problem => ({ file: h.dir, severity: 'warning', message: describeHeld(h) })),
    ...absence.expired.map((h): Problem => ({ file: h.dir, severity: 'warning', message: describeExpired(h) })),
  ];
  const problems = [...damage, ...compilation.problems, ...absenceProblems];
  const common = { absent: compilation.absent, absence, problems };
  if (!compilation.ok || !compilation.view) {
    return { ...common, ...(loaded.view ? { view: loaded.view } : {}), ok: false, accepted: false, changed: false };
  }
  if (absence.holding.length > 0) {
    return { ...common, ...(loaded.view ? { view: loaded.view } : {}), ok: true, accepted: false, changed: false };
  }
  if (deps.readOnly) {
    const same = loaded.view?.hash === compilation.view.hash ? loaded.view : undefined;
    const view = same ?? { ...compilation.view, generation: 0, compiledAt: deps.now.toISOString() };
    return { ...common, view, ok: true, accepted: true, changed: !same };
  }
  const stored = await storeView(config.stateDir, compilation.view, deps.now);
  return { ...common, view: stored.view, ok: true, accepted: true, changed: stored.changed };
}
