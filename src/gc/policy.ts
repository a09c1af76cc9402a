/**
 * Which files under imagesDir are garbage: a pure decision over a listing (docs/images.md §gc).
 * The one rule that overrides every other: a file some defined guest uses — directly or anywhere
 * down a disk's qcow2 backing chain — is never garbage, whatever its name says.
 */
import path from 'node:path';

export interface FileEntry {
  /** Absolute path. */
  path: string;
  bytes: number;
  mtimeMs: number;
  /** When the file last changed place or metadata (a rename into the base cache sets it). */
  ctimeMs?: number;
}

export interface GcFacts {
  imagesDir: string;
  files: FileEntry[];
  /** Every file a defined guest uses, backing chains followed (absolute paths). */
  inUse: ReadonlySet<string>;
  /** Base versions (hex) to keep: wanted by a profile now, newest N per profile, held by a build in flight. */
  keepBases: ReadonlySet<string>;
  /** Substrings (`<profile>@<gen>`, runner names) of files that in-flight work is creating. */
  protectedKeys: readonly string[];
  now: number;
  /** Guest files (not base files) younger than this are left alone: something may be making them right now. */
  graceMs: number;
  /**
   * When the oldest pull still running (by its staging lock, in any process) began: a file landed
   * since then (a base, or a template's disk, kernel or initrd) may be one that pull is about to
   * define a template on, so it stays until the pull ends.
   */
  pullsRunningSinceMs?: number;
}

export interface Removal {
  path: string;
  bytes: number;
  reason: string;
}

export function garbage(facts: GcFacts): Removal[] {
  const root = path.resolve(facts.imagesDir);
  const out: Removal[] = [];
  // A base in use keeps its sidecar record too.
  const keepBases = new Set(facts.keepBases);
  for (const used of facts.inUse) {
    const hex = /^([0-9a-f]{64})\.qcow2$/.exec(path.basename(used))?.[1];
    if (hex) keepBases.add(hex);
  }
  for (const f of facts.files) {
    if (facts.inUse.has(f.path)) continue;
    const rel = path.relative(root, f.path);
    if (rel.startsWith('..') || path.isAbsolute(rel)) continue;
    const [top, sub] = rel.split(path.sep);
    const name = path.basename(f.path);
    // Pulls' staging dirs are judged as whole dirs by their locks (gc/staging.ts), never file by file.
    if (top === 'staging') continue;
    // Landed (renamed into place) since the oldest running pull began: a base, kernel, initrd or
    // disk that pull is about to define a template on, not yet in any domain.
    if (facts.pullsRunningSinceMs !== undefined && (f.ctimeMs ?? 0) >= facts.pullsRunningSinceMs) continue;
    if (top === 'base') {
      const hex = /^([0-9a-f]{64})\./.exec(name)?.[1];
      if (hex && keepBases.has(hex)) continue;
      if (sub === 'downloads') out.push({ ...pick(f), reason: 'partial download of a base version no profile wants' });
      else if (name.includes('.tmp-')) out.push({ ...pick(f), reason: 'temp file of an interrupted base conversion' });
      else if (hex) out.push({ ...pick(f), reason: 'base version no template, runner or build uses' });
      continue;
    }
    if (facts.protectedKeys.some((k) => name.includes(k))) continue;
    if (facts.now - f.mtimeMs < facts.graceMs) continue;
    out.push({
      ...pick(f),
      reason: name.includes('.tmp-') ? 'temp file of an interrupted clone' : 'no defined guest uses it',
    });
  }
  return out;
}

function pick(f: FileEntry): { path: string; bytes: number } {
  return { path: f.path, bytes: f.bytes };
}
