/**
 * Provenance: one record per build, `state/templates/<template>/` holding `manifest.json` (what
 * went into the template and how the build ended) and `console.log` (the build's serial console).
 * Failed builds keep theirs too, so `history` and `logs` can say why. Format: docs/images.md.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { InputFile } from '../sources/view.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { canonicalJson, sha256 } from '../util/hash.js';

export const MANIFEST_FORMAT = 1;

export type Verdict = 'running' | 'ok' | 'failed';

export interface BuildResult {
  verdict: Verdict;
  /** Why a build failed (the guest's own words, a timeout, a download that failed, a disk floor). */
  reason?: string;
  finishedAt?: string;
  durationMs?: number;
  /** The build's serial console, copied here when the build ended. */
  consoleLog?: string;
  /** The template disk and every image under it, top first. */
  backingChain?: string[];
  /** `--keep-failed`: the name the failed guest was set aside under. */
  keptAs?: string;
}

export interface Manifest {
  format_version: typeof MANIFEST_FORMAT;
  template: string;
  rebuild: string;
  gen: string;
  profile: {
    name: string;
    source: string;
    dir: string;
    file: string;
    overrides?: string;
    /** The compiled generation (state/compiled/<n>) the build was planned from. */
    generation: number;
    inputsHash: string;
  };
  /** Why the planner built it (`no template yet`, `inputs changed …`, `template … is 8d old`). */
  reason: string;
  /** Every file that went into the image, relative to the profile dir. */
  inputs: InputFile[];
  base: {
    kind: string;
    url?: string;
    checksums?: string;
    file?: string;
    /** `base: {oci}`: the image reference as written in the profile (version is the manifest digest it resolved to). */
    reference?: string;
    version: string;
    /** sha256 of the cached qcow2 the template disk overlays (equal to version unless converted from raw). */
    digest?: string;
    cached?: string;
  };
  guest: { cpus: number; memoryMiB: number; diskBytes?: number };
  host: string;
  corral: { version: string };
  startedAt: string;
  result: BuildResult;
}

/** The digest carried in the guest's metadata: everything but `result`, which is written after the guest is defined. */
export function manifestDigest(manifest: Manifest): string {
  const { result: _result, ...identity } = manifest;
  return `sha256:${sha256(canonicalJson(identity))}`;
}

export class BuildRecords {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'templates');
  }

  recordDir(template: string): string {
    return join(this.dir, template);
  }

  manifestPath(template: string): string {
    return join(this.recordDir(template), 'manifest.json');
  }

  consolePath(template: string): string {
    return join(this.recordDir(template), 'console.log');
  }

  async write(manifest: Manifest): Promise<string> {
    await mkdir(this.recordDir(manifest.template), { recursive: true });
    await writeFileAtomic(this.manifestPath(manifest.template), `${JSON.stringify(manifest, null, 2)}\n`);
    return manifestDigest(manifest);
  }

  async saveConsole(template: string, text: string): Promise<string> {
    await mkdir(this.recordDir(template), { recursive: true });
    const file = this.consolePath(template);
    await writeFile(file, text);
    return file;
  }

  async read(template: string): Promise<Manifest | undefined> {
    try {
      return JSON.parse(await readFile(this.manifestPath(template), 'utf8')) as Manifest;
    } catch {
      return undefined;
    }
  }

  /** Every record, oldest first (template names sort by generation, a UTC timestamp). */
  async list(profile?: string): Promise<Manifest[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const all = await Promise.all(names.map((n) => this.read(n)));
    return (
      all
        .filter((m): m is Manifest => m !== undefined && (profile === undefined || m.profile.name === profile))
        // Oldest first. A generation's timestamp has whole seconds, so two builds in one second
        // would sort by their inputs hash: the start time, in milliseconds, decides first.
        .sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt) || byGen(a.template, b.template))
    );
  }

  /**
   * Records to remove: beyond `keepFailed` failed builds per profile, and beyond `keepOk` successful
   * builds whose template is gone. A record of a guest that still exists is never one of them.
   */
  async prunable(opts: { keepFailed: number; keepOk: number; existing: ReadonlySet<string> }): Promise<string[]> {
    const byProfile = new Map<string, Manifest[]>();
    for (const m of await this.list()) byProfile.set(m.profile.name, [...(byProfile.get(m.profile.name) ?? []), m]);
    const out: string[] = [];
    for (const records of byProfile.values()) {
      const gone = records.filter((m) => !opts.existing.has(m.template) && m.result.verdict !== 'running');
      const failed = gone.filter((m) => m.result.verdict === 'failed');
      const ok = gone.filter((m) => m.result.verdict === 'ok');
      out.push(...failed.slice(0, Math.max(0, failed.length - opts.keepFailed)).map((m) => m.template));
      out.push(...ok.slice(0, Math.max(0, ok.length - opts.keepOk)).map((m) => m.template));
    }
    return out.map((t) => this.recordDir(t));
  }

  async remove(template: string): Promise<void> {
    await rm(this.recordDir(template), { recursive: true, force: true });
  }
}

function byGen(a: string, b: string): number {
  const gen = (n: string) => n.slice(n.lastIndexOf('@') + 1);
  return gen(a).localeCompare(gen(b));
}
