/**
 * The resolve step, run before every plan: turns each profile's base into a version without
 * downloading any image. Only `checksums` bases need work (one small GET of the list per pass,
 * shared by the profiles that name it); `file` and pinned `url` were versioned at compile time.
 *
 * A failure is transient: the profile keeps the last version it resolved (remembered in
 * `state/base-versions.json`), so its inputs hash, live template and runners stay as they are,
 * and the planner starts no build for it until the list is readable again.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileNameOf } from '../sources/base-url.js';
import type { CompiledProfile } from '../sources/view.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { canonicalJson, sha256 } from '../util/hash.js';
import { parseChecksums } from './checksums.js';

export interface Resolution {
  /** Every profile with its base version and final inputs hash. */
  profiles: CompiledProfile[];
  /** Profiles whose base could not be resolved this pass, why, and when to try again. */
  unresolved: Record<string, { reason: string; retryAt: string }>;
}

/** Retrying an unreadable checksum list: 15 s, doubling, at most every 10 minutes. */
export const RESOLVE_RETRY = { firstMs: 15_000, maxMs: 600_000 } as const;

interface Remembered {
  version: string;
  resolvedAt: string;
}

export interface ResolverDeps {
  stateDir: string;
  fetchText: (url: string) => Promise<string>;
  clock: () => Date;
  /** False for read-only commands (plan, status): they resolve but do not write state. */
  record: boolean;
}

export class BaseResolver {
  /** Consecutive failures per checksum list, in this process: the back-off of the next look. */
  private readonly failures = new Map<string, number>();

  constructor(private readonly deps: ResolverDeps) {}

  private get file(): string {
    return join(this.deps.stateDir, 'base-versions.json');
  }

  async resolve(profiles: CompiledProfile[]): Promise<Resolution> {
    const wanted = profiles.filter((p) => p.base.kind === 'checksums');
    if (wanted.length === 0) return { profiles, unresolved: {} };
    const remembered = await this.read();
    const lists = new Map<string, Promise<Map<string, string>>>();
    const unresolved: Resolution['unresolved'] = {};
    const failedLists = new Set<string>();
    let changed = false;
    const resolved = await Promise.all(
      profiles.map(async (p) => {
        if (p.base.kind !== 'checksums') return p;
        const { url, checksums } = p.base;
        const name = fileNameOf(url);
        const key = `${checksums}#${name}`;
        let version: string | undefined;
        try {
          if (!lists.has(checksums)) lists.set(checksums, this.deps.fetchText(checksums).then(parseChecksums));
          const hex = (await lists.get(checksums)!).get(name);
          if (!hex) throw new Error(`the checksum list ${checksums} has no sha256 line for "${name}"`);
          version = `sha256:${hex}`;
          if (remembered[key]?.version !== version) {
            remembered[key] = { version, resolvedAt: this.deps.clock().toISOString() };
            changed = true;
          }
        } catch (error) {
          const last = remembered[key];
          failedLists.add(checksums);
          const failures = (this.failures.get(checksums) ?? 0) + 1;
          const delay = Math.min(RESOLVE_RETRY.firstMs * 2 ** (failures - 1), RESOLVE_RETRY.maxMs);
          unresolved[p.name] = {
            reason: `${(error as Error).message}${last ? `; keeping base ${last.version.slice(0, 19)}… resolved ${last.resolvedAt}` : ''}`,
            retryAt: new Date(this.deps.clock().getTime() + delay).toISOString(),
          };
          version = last?.version;
        }
        return withBaseVersion(p, version ?? '');
      }),
    );
    for (const list of lists.keys()) {
      if (failedLists.has(list)) this.failures.set(list, (this.failures.get(list) ?? 0) + 1);
      else this.failures.delete(list);
    }
    if (changed && this.deps.record) await writeFileAtomic(this.file, `${JSON.stringify(remembered, null, 2)}\n`);
    return { profiles: resolved, unresolved };
  }

  private async read(): Promise<Record<string, Remembered>> {
    try {
      return JSON.parse(await readFile(this.file, 'utf8')) as Record<string, Remembered>;
    } catch {
      return {};
    }
  }
}

/**
 * The profile with its resolved version; unless `rebuild.onBaseUpdate: false`, the version joins
 * the inputs hash, so a new upstream version is a change that rebuilds.
 */
export function withBaseVersion(profile: CompiledProfile, version: string): CompiledProfile {
  if (profile.rebuild.onBaseUpdate === false) return { ...profile, baseVersion: version };
  const inputsHash = `sha256:${sha256(canonicalJson({ compiled: profile.inputsHash, baseVersion: version }))}`;
  return { ...profile, baseVersion: version, inputsHash };
}
