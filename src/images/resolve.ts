/**
 * The resolve step, run before every plan: turns each profile's base into a version without
 * downloading any image. Only `checksums` bases (one small GET of the list per pass, shared by the
 * profiles that name it) and `oci` tags (one HEAD per tag per pass: the manifest digest is the
 * version) need work; `file`, pinned `url` and `oci` by digest were versioned at compile time.
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
  /**
   * `base: {oci}`: the manifest digest a tag points at now, from one HEAD (never a download);
   * undefined when the tag does not exist. Absent: such bases cannot be resolved.
   */
  resolveOci?: (ref: string) => Promise<string | undefined>;
  clock: () => Date;
  /** False for read-only commands (plan, status): they resolve but do not write state. */
  record: boolean;
}

/** The bases that need a look before every pass: checksum lists, and OCI tags. */
function lookupOf(p: CompiledProfile): { source: string; key: string } | undefined {
  if (p.base.kind === 'checksums')
    return { source: p.base.checksums, key: `${p.base.checksums}#${fileNameOf(p.base.url)}` };
  if (p.base.kind === 'oci' && !p.base.ref.includes('@')) return { source: p.base.ref, key: `oci:${p.base.ref}` };
  return undefined;
}

export class BaseResolver {
  /** Consecutive failures per checksum list or OCI tag, in this process: the back-off of the next look. */
  private readonly failures = new Map<string, number>();

  constructor(private readonly deps: ResolverDeps) {}

  private get file(): string {
    return join(this.deps.stateDir, 'base-versions.json');
  }

  async resolve(profiles: CompiledProfile[]): Promise<Resolution> {
    if (!profiles.some((p) => lookupOf(p))) return { profiles, unresolved: {} };
    const remembered = await this.read();
    // One request per list or tag per pass, shared by every profile naming it.
    const lookups = new Map<string, Promise<unknown>>();
    const once = <T>(source: string, look: () => Promise<T>): Promise<T> => {
      if (!lookups.has(source)) lookups.set(source, look());
      return lookups.get(source) as Promise<T>;
    };
    const unresolved: Resolution['unresolved'] = {};
    const failedSources = new Set<string>();
    let changed = false;
    const resolved = await Promise.all(
      profiles.map(async (p) => {
        const lookup = lookupOf(p);
        if (!lookup) return p;
        let version: string | undefined;
        try {
          version = await this.version(p, once);
          if (remembered[lookup.key]?.version !== version) {
            remembered[lookup.key] = { version, resolvedAt: this.deps.clock().toISOString() };
            changed = true;
          }
        } catch (error) {
          const last = remembered[lookup.key];
          failedSources.add(lookup.source);
          const failures = (this.failures.get(lookup.source) ?? 0) + 1;
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
    for (const source of lookups.keys()) {
      if (failedSources.has(source)) this.failures.set(source, (this.failures.get(source) ?? 0) + 1);
      else this.failures.delete(source);
    }
    if (changed && this.deps.record) await writeFileAtomic(this.file, `${JSON.stringify(remembered, null, 2)}\n`);
    return { profiles: resolved, unresolved };
  }

  /** This pass's version of a checksum-listed or OCI-tagged base; throws when it cannot be known. */
  private async version(
    p: CompiledProfile,
    once: <T>(source: string, look: () => Promise<T>) => Promise<T>,
  ): Promise<string> {
    if (p.base.kind === 'checksums') {
      const { url, checksums } = p.base;
      const name = fileNameOf(url);
      const hex = (await once(checksums, () => this.deps.fetchText(checksums).then(parseChecksums))).get(name);
      if (!hex) throw new Error(`the checksum list ${checksums} has no sha256 line for "${name}"`);
      return `sha256:${hex}`;
    }
    if (p.base.kind !== 'oci') throw new Error(`base kind ${p.base.kind} needs no resolve`);
    const ref = p.base.ref;
    const resolveOci = this.deps.resolveOci;
    if (!resolveOci) throw new Error(`cannot resolve ${ref}: no registry access`);
    const digest = await once(ref, async () => {
      try {
        return await resolveOci(ref);
      } catch (error) {
        throw new Error(`cannot resolve ${ref}: ${(error as Error).message}`, { cause: error });
      }
    });
    if (!digest) throw new Error(`${ref} does not exist (yet)`);
    return digest;
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
