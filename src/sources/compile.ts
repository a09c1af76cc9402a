import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import PQueue from 'p-queue';
import type { Problem } from '../errors.js';
import type { SourceSpec } from '../config/host-config.js';
import type { Validators } from '../config/schema.js';
import { canonicalJson, sha256 } from '../util/hash.js';
import { enumerateSources } from './enumerate.js';
import { FileDigests, hashInputs } from './inputs.js';
import { mergeSources, type SourceEntry } from './merge.js';
import { PROFILE_FILE, readProfile } from './read-profile.js';
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
    const dirents = await readdir(source.dir, { withFileTypes: true });
    const names = dirents
      .filter((d) => d.isDirectory() || d.isSymbolicLink())
      .map((d) => d.name)
      .sort();
    // Bounded, so a source with thousands of profiles does not run out of file descriptors.
    const results = await files.addAll(
      names.map((name) => async () => {
        const dir = join(source.dir, name);
        const hasProfile = (await readdir(dir).catch(() => [] as string[])).includes(PROFILE_FILE);
        return hasProfile ? readProfile(source.name, dir, name, deps.validators) : undefined;
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
