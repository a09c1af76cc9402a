import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';

export type Confined = { ok: true; path: string } | { ok: false; message: string };

/**
 * Resolves a path a profile references, insisting it stays inside the profile's own dir —
 * also after following symlinks — so a profile can never pull in /etc/passwd or a sibling's files.
 */
export async function confine(profileDir: string, reference: string, expect?: 'file' | 'dir'): Promise<Confined> {
  if (isAbsolute(reference))
    return { ok: false, message: `must be a path relative to the profile dir, not absolute: ${reference}` };
  const lexical = resolve(profileDir, reference);
  if (!inside(profileDir, lexical)) return { ok: false, message: `leaves the profile dir: ${reference}` };
  let real: string, realDir: string, isFile: boolean, isDir: boolean;
  try {
    real = await realpath(lexical);
    realDir = await realpath(profileDir);
    const info = await stat(real); // may vanish between the calls: still a problem, not a crash
    [isFile, isDir] = [info.isFile(), info.isDirectory()];
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { ok: false, message: code === 'ENOENT' ? `not found: ${reference}` : `cannot read ${reference} (${code})` };
  }
  if (!inside(realDir, real)) return { ok: false, message: `is a symlink leaving the profile dir: ${reference}` };
  // Hashing and the seed disk read these: a directory where a file belongs (or the reverse) is an input error.
  if (expect === 'file' && !isFile) return { ok: false, message: `must be a regular file: ${reference}` };
  if (expect === 'dir' && !isDir) return { ok: false, message: `must be a directory: ${reference}` };
  return { ok: true, path: lexical };
}

export function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}
