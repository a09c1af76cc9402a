import { readdir, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { Problem } from '../errors.js';
import type { SourceSpec } from '../config/host-config.js';
import { isWildSegment, PathPattern } from './path-pattern.js';

/** A concrete directory of profiles. A glob source yields one per matching directory. */
export interface ResolvedSource {
  name: string;
  dir: string;
  /** The host-config source this came from (for globs, several resolved sources share one spec). */
  spec: SourceSpec;
}

export interface Enumeration {
  sources: ResolvedSource[];
  problems: Problem[];
  /** Source dirs that were configured but are absent right now (a missing dir is fine). */
  absent: string[];
}

export async function enumerateSources(specs: SourceSpec[]): Promise<Enumeration> {
  const result: Enumeration = { sources: [], problems: [], absent: [] };
  for (const spec of specs) {
    const dirs = 'path' in spec ? [spec.path] : await expandGlob(spec.glob, result.problems);
    if ('glob' in spec && dirs.length === 0) result.absent.push(spec.glob);
    for (const dir of dirs) {
      const state = await dirState(dir);
      if (state === 'dir') result.sources.push({ name: 'path' in spec ? spec.name : `${spec.name}:${dir}`, dir, spec });
      else if (state === 'missing') result.absent.push(dir);
      else
        result.problems.push({
          file: dir,
          severity: 'error',
          message: `source "${spec.name}": ${state}; its profiles are kept until it can be read`,
        });
    }
  }
  return result;
}

async function dirState(dir: string): Promise<'dir' | 'missing' | string> {
  try {
    const info = await stat(dir);
    if (!info.isDirectory()) return 'is not a directory';
    await readdir(dir);
    return 'dir';
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // ENOTDIR: a file where a parent dir should be (`/mnt/stray-file/corral/profiles`) — the dir is not there.
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    return `cannot read directory (${code ?? String(error)})`;
  }
}

/** Expands a source glob (see path-pattern.ts) to the directories it matches now. Sorted. */
export async function expandGlob(pattern: string, problems: Problem[] = []): Promise<string[]> {
  const compiled = new PathPattern(pattern);
  let current: string[] = [sep];
  for (const [index, segment] of compiled.segments.entries()) {
    const next: string[] = [];
    for (const base of current) {
      if (!isWildSegment(segment)) {
        next.push(join(base, segment));
        continue;
      }
      // A dir on the way that is not there matches nothing; one that cannot be read is unknown, not empty.
      const entries = await readdir(base, { withFileTypes: true }).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT' && error.code !== 'ENOTDIR')
          problems.push({
            file: base,
            severity: 'error',
            message: `cannot read a directory on the way to the source glob ${pattern} (${error.code ?? String(error)}); its profiles are kept until it can be read`,
          });
        return [];
      });
      for (const entry of entries) {
        if (!compiled.matchesSegment(index, entry.name)) continue;
        // A glob selects directories: a stray file next to them is no source and no error.
        const path = join(base, entry.name);
        if (entry.isDirectory() || (entry.isSymbolicLink() && (await isDir(path)))) next.push(path);
      }
    }
    current = next;
  }
  return current.sort();
}

async function isDir(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isDirectory(),
    () => false,
  );
}
