import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import type { Problem } from '../errors.js';
import type { SourceSpec } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import { showBytes, utf8Name } from '../util/escape.js';
import { canonicalJson, sha256 } from '../util/hash.js';
import { enumerateSources } from './enumerate.js';
import { FileDigests, hashInputs } from './inputs.js';
import { mergeSources, type SourceEntry } from './merge.js';
import { PROFILE_FILE, readProfile, type ReadResult } from './read-profile.js';
import type { CompiledProfile, CompiledView, MaskedProfile } from './view.js';

export interface CompileDeps {
  validators: Validators;
  digests: FileDigests;
}

/** The result of reading every source: a view when there are no errors, and all problems either way. */
export interface Compilation {
  ok: boolean;
  problems: Problem[];
  /** The view without generation and time (those come when it is stored). */
  view?: Omit<CompiledView, 'generation' | 'compiledAt'>;
  /** Source dirs configured but absent right now. */
  absent: string[];
  /** Source dirs that were there when the compile began (the ones it read). */
  present: string[];
}

export async function compileSources(specs: SourceSpec[], deps: CompileDeps): Promise<Compilation> {
  const enumeration = await enumerateSources(specs);
  const problems: Problem[] = [...enumeration.problems];
  const files = new PQueue({ concurrency: 32 });
  const entries: SourceEntry[] = [];
  for (const source of enumeration.sources) {
    const listed = await listProfileDirs(source.dir, source.name);
    problems.push(...listed.problems);
    // Bounded, so a source with thousands of profiles does not run out of file descriptors.
    const results = await files.addAll(
      listed.dirs.map((name) => async (): Promise<ReadResult | undefined> => {
        const dir = join(source.dir, name);
        const unreadable = await profileFileProblem(dir, name);
        if (unreadable === 'skip') return undefined;
        if (unreadable) return { kind: 'invalid', problems: [unreadable] };
        return readProfile(source.name, dir, name, deps.validators);
      }),
    );
    for (const result of results) {
      if (!result) continue;
      if (result.kind === 'invalid') problems.push(...result.problems);
      else entries.push(result);
    }
  }
  const merged = mergeSources(entries);
  problems.push(...merged.problems);
  const ok = !problems.some((p) => p.severity === 'error');
  const present = enumeration.sources.map((s) => s.dir);
  if (!ok) return { ok, problems, absent: enumeration.absent, present };
  const profiles = await files.addAll(
    merged.profiles.map((p) => async () => {
      const compiled = await hashInputs(p, deps.digests);
      return p.overrides ? { ...compiled, overrides: p.overrides } : compiled;
    }),
  );
  return {
    ok,
    problems,
    absent: enumeration.absent,
    present,
    view: { format_version: 1, hash: viewHash(profiles, merged.masked), profiles, masked: merged.masked },
  };
}

export function viewHash(profiles: CompiledProfile[], masked: MaskedProfile[]): string {
  return `sha256:${sha256(canonicalJson({ profiles, masked }))}`;
}

/**
 * The dirs of a source that are profiles. Unknown is not absent: whatever cannot be read (the source
 * itself, a name that is not UTF-8, a dangling or looping symlink) is an error, so the last good
 * view stays instead of its profiles being taken for removed.
 */
async function listProfileDirs(
  sourceDir: string,
  sourceName: string,
): Promise<{ dirs: string[]; problems: Problem[] }> {
  const problems: Problem[] = [];
  const keep = 'its profiles are kept until it can be read';
  let dirents;
  try {
    dirents = await readdir(sourceDir, { withFileTypes: true, encoding: 'buffer' });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    problems.push({
      file: sourceDir,
      severity: 'error',
      message: `cannot read source "${sourceName}" (${code}); ${keep}`,
    });
    return { dirs: [], problems };
  }
  const dirs: string[] = [];
  for (const d of dirents) {
    const name = utf8Name(d.name);
    if (name === undefined) {
      if (d.isDirectory() || d.isSymbolicLink())
        problems.push({
          file: join(sourceDir, showBytes(d.name)),
          severity: 'error',
          message: 'the name is not valid UTF-8; rename it (profile names are a-z, 0-9, "-" and "_")',
        });
      continue;
    }
    if (d.isDirectory()) dirs.push(name);
    else if (d.isSymbolicLink()) {
      const target = await stat(join(sourceDir, name)).catch((error: NodeJS.ErrnoException) => error);
      if (target instanceof Error) {
        const why =
          target.code === 'ENOENT' ? 'a dangling symlink' : `a symlink that cannot be followed (${target.code})`;
        problems.push({
          file: join(sourceDir, name),
          severity: 'error',
          message: `${why}; ${keep.replace('its profiles are', 'the profile is')}`,
        });
      } else if (target.isDirectory()) dirs.push(name);
    }
  }
  return { dirs: dirs.sort(), problems };
}

/** Why a dir in a source cannot be read as a profile; 'skip' for a hidden dir that is no profile (`.git`). */
async function profileFileProblem(dir: string, name: string): Promise<Problem | 'skip' | undefined> {
  let names: string[];
  try {
    names = (await readdir(dir, { encoding: 'buffer' })).map((n) => utf8Name(n) ?? '');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    return {
      file: dir,
      severity: 'error',
      message: `cannot read the profile dir (${code}); the profile is kept until it can be read`,
    };
  }
  if (names.includes(PROFILE_FILE)) return undefined;
  if (name.startsWith('.')) return 'skip';
  const lookalike = names.find((n) => /^profile\.[a-z]+$/i.test(n) || n.toLowerCase() === PROFILE_FILE);
  return {
    file: dir,
    severity: 'error',
    message: `no ${PROFILE_FILE}${lookalike ? ` (found "${lookalike}": rename it to ${PROFILE_FILE})` : ''}; every dir in a source is a profile: move other dirs out or start their name with "."`,
  };
}
