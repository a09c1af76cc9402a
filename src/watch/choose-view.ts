import { stat } from 'node:fs/promises';
import type { HostConfig } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import type { Problem } from '../errors.js';
import { compileSources, type Compilation } from '../sources/compile.js';
import { enumerateSources } from '../sources/enumerate.js';
import type { FileDigests } from '../sources/inputs.js';
import type { CompiledView } from '../sources/view.js';
import { storeView } from '../state/compiled-store.js';
import { describeExpired, describeHeld, knownSourcesOf } from '../state/source-absence.js';
import type { AbsenceReport, AbsenceTracker } from './absence.js';

export interface ChooseDeps {
  config: HostConfig;
  validators: Validators;
  digests: FileDigests;
  absence: AbsenceTracker;
  now: Date;
}

export interface Choice {
  /** The view to reconcile against: the fresh one, or the last good one (undefined if none ever compiled). */
  view?: CompiledView;
  /** True when the fresh compile was accepted (and stored as `current`). */
  accepted: boolean;
  /** True when accepting it wrote a new generation. */
  changed: boolean;
  compiled: boolean;
  problems: Problem[];
  absence: AbsenceReport;
  /** The source dirs present in this pass (the one enumeration, confirmed after the compile): what to watch deep. */
  sourceDirs: string[];
}

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isDirectory(),
    () => false,
  );
}

async function presentDirs(config: HostConfig): Promise<Set<string>> {
  return new Set((await enumerateSources(config.sources)).sources.map((s) => s.dir));
}

/**
 * Compiles every source from scratch and decides what to reconcile against. The fresh view is
 * accepted (stored and swapped in) only when it compiled cleanly and no known source dir is within
 * its absence grace period; otherwise the last good view stays. A dir counts as present only when
 * it was there both before and after the compile, so one vanishing mid-read is held, not dropped.
 */
export async function chooseView(lastGood: CompiledView | undefined, deps: ChooseDeps): Promise<Choice> {
  const { config } = deps;
  let compilation: Compilation;
  let before: Set<string>;
  try {
    compilation = await compileSources(config.sources, { validators: deps.validators, digests: deps.digests });
    // The compile's own enumeration is the "before" look: no need to list the sources a second time.
    before = new Set(compilation.present);
  } catch (error) {
    const message = `reading the sources failed: ${(error as Error).message}`;
    compilation = { ok: false, problems: [{ file: '', severity: 'error', message }], absent: [], present: [] };
    before = await presentDirs(config);
  }
  // Still there after the compile? A stat each, not a second listing of the sources.
  const stillThere = await Promise.all([...before].map(async (d) => ((await isDir(d)) ? d : undefined)));
  const present = new Set(stillThere.filter((d): d is string => d !== undefined));
  // A source removed from the host config is gone on purpose: no grace. One still named there whose
  // dir is missing (unmounted, a mistyped path, a glob that matches nothing) is held.
  const configured = new Set(config.sources.map((s) => s.name));
  const absence = await deps.absence.observe(
    knownSourcesOf(lastGood),
    present,
    (k) => configured.has(k.source),
    deps.now.getTime(),
  );
  const held: Problem[] = [
    ...absence.held.map((h): Problem => ({ file: h.dir, severity: 'warning', message: describeHeld(h) })),
    ...absence.expiredSources.map((h): Problem => ({ file: h.dir, severity: 'warning', message: describeExpired(h) })),
  ];
  const problems = [...compilation.problems, ...held];
  if (compilation.ok && compilation.view && absence.holding.length === 0) {
    const stored = await storeView(config.stateDir, compilation.view, deps.now);
    return {
      view: stored.view,
      accepted: true,
      changed: stored.changed,
      compiled: true,
      problems,
      absence,
      sourceDirs: [...present],
    };
  }
  return {
    ...(lastGood ? { view: lastGood } : {}),
    accepted: false,
    changed: false,
    compiled: compilation.ok,
    problems,
    absence,
    sourceDirs: [...present],
  };
}
