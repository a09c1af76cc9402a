import { mkdir, readFile, readdir, readlink, rename, rm, symlink, open } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { syncDir } from '../util/atomic-write.js';
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
export async function storeView(stateDir: string, view: Omit<CompiledView, 'generation' | 'compiledAt'>, now: Date): Promise<StoreResult> {
  const current = await readCurrentView(stateDir);
  if (current && current.hash === view.hash) return { view: current, changed: false };
  const compiledDir = join(stateDir, 'compiled');
  await mkdir(compiledDir, { recursive: true });
  const generations = await listGenerations(compiledDir);
  const generation = Math.max(current?.generation ?? 0, ...generations) + 1;
  const full: CompiledView = { format_version: 1, hash: view.hash, generation, compiledAt: now.toISOString(), profiles: view.profiles, masked: view.masked };
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
  await rename(link, join(stateDir, 'current'));
  await syncDir(stateDir);
  await prune(compiledDir, generation);
  return { view: full, changed: true };
}

export async function readCurrentView(stateDir: string): Promise<CompiledView | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'current', 'view.json'), 'utf8')) as CompiledView;
  } catch (error) {
    // A view damaged behind our back counts as none: the next compile writes a fresh generation.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || error instanceof SyntaxError) return undefined;
    throw error;
  }
}

export async function currentGeneration(stateDir: string): Promise<number | undefined> {
  const target = await readlink(join(stateDir, 'current')).catch(() => undefined);
  return target ? Number(target.split('/').pop()) : undefined;
}

async function listGenerations(compiledDir: string): Promise<number[]> {
  return (await readdir(compiledDir)).filter((n) => /^\d+$/.test(n)).map(Number);
}

async function prune(compiledDir: string, current: number): Promise<void> {
  const old = (await listGenerations(compiledDir)).filter((g) => g !== current).sort((a, b) => b - a);
  for (const generation of old.slice(KEEP_GENERATIONS)) await rm(join(compiledDir, String(generation)), { recursive: true, force: true });
  for (const name of await readdir(compiledDir)) {
    if (name.startsWith('.tmp-')) await rm(join(compiledDir, name), { recursive: true, force: true });
  }
}

