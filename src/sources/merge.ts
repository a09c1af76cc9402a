import type { Problem } from '../errors.js';
import type { ReadProfile } from './read-profile.js';
import type { MaskedProfile } from './view.js';

export type SourceEntry = { kind: 'profile'; profile: ReadProfile } | { kind: 'mask'; name: string; file: string };

export interface Merged {
  profiles: (ReadProfile & { overrides?: string })[];
  masked: MaskedProfile[];
  problems: Problem[];
}

/**
 * Merges entries in source order, stricter than a silent last-wins: a name seen twice is an
 * error naming both files unless the later one says `override: true` or `mask: true`.
 */
export function mergeSources(entries: SourceEntry[]): Merged {
  const byName = new Map<string, ReadProfile & { overrides?: string }>();
  const masked = new Map<string, MaskedProfile>();
  const problems: Problem[] = [];
  for (const entry of entries) {
    const name = entry.kind === 'mask' ? entry.name : entry.profile.name;
    const earlier = byName.get(name);
    if (entry.kind === 'mask') {
      byName.delete(name);
      masked.set(name, { name, file: entry.file, ...(earlier ? { masks: earlier.file } : {}) });
      if (!earlier)
        problems.push({
          file: entry.file,
          severity: 'warning',
          message: `masks profile "${name}", which no earlier source defines`,
        });
      continue;
    }
    const { profile } = entry;
    if (earlier && !profile.override) {
      problems.push({
        file: profile.file,
        severity: 'error',
        message: `profile "${name}" is already defined in ${earlier.file}; add "override: true" to replace it or "mask: true" to remove it`,
      });
      continue;
    }
    if (!earlier && profile.override) {
      problems.push({
        file: profile.file,
        severity: 'warning',
        message: `"override: true" but no earlier source defines profile "${name}"`,
      });
    }
    masked.delete(name);
    byName.set(name, earlier ? { ...profile, overrides: earlier.file } : profile);
  }
  return {
    profiles: [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : 1)),
    masked: [...masked.values()].sort((a, b) => (a.name < b.name ? -1 : 1)),
    problems,
  };
}
