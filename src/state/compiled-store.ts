import { lstat, mkdir, readFile, readdir, readlink, rename, rm, symlink, open } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { syncDir } from '../util/atomic-write.js';
import type { Problem } from '../errors.js';
import type { CompiledView } from '../sources/view.js';

/** How many compiled generations to keep besides the current one. */
export const KEEP_GENERATIONS = 5;

export interface StoreResult {
  view: CompiledView;
  /** False when the inputs were unchanged and the current generation was kept. */
  changed: boolean;
}

/**
 * Stores a compiled view as `compiled/<generation>/view.json` and swaps `current` to it by
 * renaming a fresh symlink over the old one, so readers always see one whole view (s6-rc-update style).
 */
export async function storeView(
  stateDir: string,
  view: Omit<CompiledView, 'generation' | 'compiledAt'>,
  now: Date,
): Promise<StoreResult> {
  const loaded = await loadCurrentView(stateDir);
  const current = loaded.view;
  if (current && current.hash === view.hash) return { view: current, changed: false };
  const compiledDir = join(stateDir, 'compiled');
  await healCompiledDir(stateDir, compiledDir);
  const generations = await listGenerations(compiledDir);
  const generation = Math.max(current?.generation ?? 0, ...generations) + 1;
  const full: CompiledView = {
    format_version: 1,
    hash: view.hash,
    generation,
    compiledAt: now.toISOString(),
    profiles: view.profiles,
    masked: view.masked,
  };
  const token = randomBytes(4).toString('hex');
  const temp = join(compiledDir, `.tmp-${token}`);
  await mkdir(temp);
  const handle = await open(join(temp, 'view.json'), 'w');
  try {
    await handle.writeFile(`${JSON.stringify(full, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDir(temp);
  await rename(temp, join(compiledDir, String(generation)));
  const link = join(stateDir, `.current-${token}`);
  await symlink(join('compiled', String(generation)), link);
  // A `current` that is a file or a dir (damaged behind our back) cannot be renamed over: clear it first.
  if (
    loaded.damage &&
    !(await lstat(join(stateDir, 'current')).then(
      (i) => i.isSymbolicLink(),
      () => true,
    ))
  )
    await rm(join(stateDir, 'current'), { recursive: true, force: true });
  await rename(link, join(stateDir, 'current'));
  await syncDir(stateDir);
  await prune(compiledDir, generation);
  return { view: full, changed: true };
}

export async function readCurrentView(stateDir: string): Promise<CompiledView | undefined> {
  return (await loadCurrentView(stateDir)).view;
}

/**
 * The current view, or why there is none usable: a `current` or `compiled/` damaged behind our
 * back (a file, a dir, a loop, garbled JSON) counts as no view — reported by the caller, never an
 * internal error — and the next compile writes a fresh generation over it.
 */
export async function loadCurrentView(stateDir: string): Promise<{ view?: CompiledView; damage?: string }> {
  const file = join(stateDir, 'current', 'view.json');
  try {
    const view = JSON.parse(await readFile(file, 'utf8')) as CompiledView;
    if (!view || typeof view !== 'object' || !Array.isArray(view.profiles) || typeof view.hash !== 'string')
      return { damage: `${file} is not a compiled view` };
    return { view };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      // No `current` at all is a fresh state dir; a `current` whose target is gone is damage.
      const link = await lstat(join(stateDir, 'current')).catch(() => undefined);
      return link ? { damage: `${join(stateDir, 'current')} points at a generation that is gone` } : {};
    }
    if (error instanceof SyntaxError) return { damage: `${file} is not valid JSON` };
    return { damage: `${join(stateDir, 'current')} cannot be read (${code ?? String(error)})` };
  }
}

/** The damage line as a problem: once per command, healed by the next compile. */
export function damageProblem(damage: string): Problem {
  return {
    file: '',
    severity: 'warning',
    message: `the stored view is damaged: ${damage}; the next "corral compile" or reconcile writes a fresh generation`,
  };
}

async function healCompiledDir(stateDir: string, compiledDir: string): Promise<void> {
  const info = await lstat(compiledDir).catch(() => undefined);
  if (info && !info.isDirectory()) await rm(compiledDir, { force: true });
  await mkdir(compiledDir, { recursive: true });
}

export async function currentGeneration(stateDir: string): Promise<number | undefined> {
  const target = await readlink(join(stateDir, 'current')).catch(() => undefined);
  return target ? Number(target.split('/').pop()) : undefined;
}

async function listGenerations(compiledDir: string): Promise<number[]> {
  return (await readdir(compiledDir)).filter((n) => /^\d+$/.test(n) && n.length < 16).map(Number);
}

/** Compiled generations beyond KEEP_GENERATIONS (the current one aside), for garbage collection. */
export async function oldGenerations(stateDir: string): Promise<string[]> {
  const compiledDir = join(stateDir, 'compiled');
  const current = await currentGeneration(stateDir);
  const all = await listGenerations(compiledDir).catch(() => [] as number[]);
  const old = all.filter((g) => g !== current).sort((a, b) => b - a);
  return old.slice(KEEP_GENERATIONS).map((g) => join(compiledDir, String(g)));
}

async function prune(compiledDir: string, current: number): Promise<void> {
  const old = (await listGenerations(compiledDir)).filter((g) => g !== current).sort((a, b) => b - a);
  for (const generation of old.slice(KEEP_GENERATIONS))
    await rm(join(compiledDir, String(generation)), { recursive: true, force: true });
  for (const name of await readdir(compiledDir)) {
    if (name.startsWith('.tmp-')) await rm(join(compiledDir, name), { recursive: true, force: true });
  }
}
