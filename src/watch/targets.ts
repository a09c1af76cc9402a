import { stat } from 'node:fs/promises';
import { dirname, sep } from 'node:path';
import type { SourceSpec } from '../config/host-config.js';
import { PathPattern } from '../sources/path-pattern.js';

/** A directory to watch and how many levels of subdirectories below it to follow. */
export interface WatchTarget {
  dir: string;
  depth: number;
}

/**
 * Levels watched below a source dir: `<source>/<profile>/profile.yaml` is level 1, a provision
 * script `<profile>/provision/x.sh` level 2; deeper trees inside a provision dir are followed up to here.
 */
export const SOURCE_DEPTH = 8;

export function patternOf(spec: SourceSpec): string {
  return 'path' in spec ? spec.path : spec.glob;
}

/** The longest wildcard-free prefix of a pattern, and the segments after it. */
export function staticRoot(pattern: string): { root: string; rest: string[] } {
  return new PathPattern(pattern).staticRoot();
}

/** True when `path` is on the way to something the pattern matches, or inside such a match. */
export function isOnPattern(path: string, pattern: string): boolean {
  return new PathPattern(pattern).isOnPattern(path);
}

/** True when `dir` itself is matched by the pattern (a source dir the pattern names). */
export function matchesPattern(dir: string, pattern: string): boolean {
  return new PathPattern(pattern).matches(dir);
}

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isDirectory(),
    () => false,
  );
}

async function nearestExisting(dir: string): Promise<string> {
  let current = dir;
  while (!(await isDir(current))) {
    const parent = dirname(current);
    if (parent === current) return current;
    current = parent;
  }
  return current;
}

/**
 * What to watch so that every change that could alter the compiled view is seen:
 * - each existing source dir (each match of a glob), SOURCE_DEPTH levels deep;
 * - a glob's static root, deep enough to see a new match appear (`/mnt` for `/mnt/*\/corral/profiles`);
 * - for a source whose dir (or glob root) does not exist yet, its nearest existing ancestor, one level
 *   deep: when the next level appears, the targets are computed again before the sources are read;
 * - the host config file's directory (editors replace the file, so the file itself is a poor target).
 */
export async function watchTargets(
  sources: SourceSpec[],
  configFile: string | undefined,
  /** The source dirs this pass's enumeration found: globs are not expanded a second time. */
  sourceDirs: readonly string[],
): Promise<WatchTarget[]> {
  const targets = new Map<string, number>();
  const add = (dir: string, depth: number) => targets.set(dir, Math.max(depth, targets.get(dir) ?? -1));
  for (const spec of sources) {
    const pattern = new PathPattern(patternOf(spec));
    const { root, rest } = pattern.staticRoot();
    if (!(await isDir(root))) {
      add(await nearestExisting(root), 0);
      continue;
    }
    if (rest.length === 0) {
      add(root, SOURCE_DEPTH);
      continue;
    }
    add(root, rest.length - 1);
    for (const dir of sourceDirs) if (pattern.matches(dir)) add(dir, SOURCE_DEPTH);
  }
  if (configFile) add(dirname(configFile), 0);
  return [...targets].map(([dir, depth]) => ({ dir, depth })).sort((a, b) => a.dir.localeCompare(b.dir));
}

/** Paths whose changes matter: anything on the way to or inside a source, and the config file. */
export function relevance(
  sources: SourceSpec[],
  configFile?: string,
): (path: string) => 'change' | 'config' | undefined {
  const patterns = sources.map((s) => new PathPattern(patternOf(s)));
  return (path) => {
    if (configFile && path === configFile) return 'config';
    return patterns.some((p) => p.isOnPattern(path)) ? 'change' : undefined;
  };
}

/** Paths never worth a pass: corral's own state and images, and version-control internals. */
export function ignoredPaths(dirs: string[]): (path: string) => boolean {
  return (path) => path.split(sep).includes('.git') || dirs.some((d) => path === d || path.startsWith(d + sep));
}
