import type { Problem } from '../errors.js';
import type { HostConfig } from '../config/host-config.js';
import { compileSources, type CompileDeps } from '../sources/compile.js';
import type { CompiledView } from '../sources/view.js';
import { readCurrentView, storeView } from './compiled-store.js';

export interface Refreshed {
  /** The view to act on: the new one, or the last good one when compiling failed (undefined if none ever compiled). */
  view?: CompiledView;
  problems: Problem[];
  /** True when the sources compiled cleanly. */
  ok: boolean;
  /** True when a new generation was written. */
  changed: boolean;
  absent: string[];
}

/** Compiles every source and, when clean, swaps it in; a failed compile leaves `current` untouched. */
export async function refreshView(config: HostConfig, deps: CompileDeps & { now: Date }): Promise<Refreshed> {
  const compilation = await compileSources(config.sources, deps);
  if (!compilation.ok || !compilation.view) {
    return { view: await readCurrentView(config.stateDir), problems: compilation.problems, ok: false, changed: false, absent: compilation.absent };
  }
  const stored = await storeView(config.stateDir, compilation.view, deps.now);
  return { view: stored.view, problems: compilation.problems, ok: true, changed: stored.changed, absent: compilation.absent };
}
