/**
 * The content-addressed base image cache (docs/images.md):
 *
 *   <imagesDir>/base/sha256/<hex>.qcow2   the base, standalone qcow2; hex is the sha256 of the source bytes (its version)
 *   <imagesDir>/base/sha256/<hex>.json    where it came from, when, its original format and the qcow2's own digest
 *   <imagesDir>/base/downloads/<hex>.part a download in progress or cut midway: resumed, never trusted until verified
 *
 * Entries appear atomically (temp name, verify, rename), so a crash never leaves a half-written
 * base that looks valid, and each version is fetched once however many profiles and builds want it.
 */
import { copyFile, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConfigError, TransientError } from '../errors.js';
import type { BaseSpec } from '../sources/view.js';
import { sha256File } from '../util/hash.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { formatBytes } from '../util/size.js';
import { downloadTo, type Progress } from './transport.js';
import { formatReference, parseReference, pinned } from '../oci/reference.js';

/** Runs an external command (qemu-img); the same shape as the hypervisor's Exec, passed in. */
export type RunCommand = (file: string, args: readonly string[]) => Promise<{ stdout: string }>;

export interface BaseCacheDeps {
  imagesDir: string;
  run: RunCommand;
  clock: () => Date;
  onProgress?: (p: Progress) => void;
  /** Called before a download starts: throws (after collecting garbage) when imagesDir is below its free-space floor. */
  beforeFetch?: () => Promise<void>;
  /**
   * `base: {oci}`: pulls the image `ref` pinned at `version` (its manifest digest; every chunk is
   * verified against it) into a staging dir and gives back its disk file; `finish(true)` removes
   * the staging dir once the disk has moved, `finish(false)` keeps it for a resumed pull.
   */
  pullOci?: (ref: string, version: string) => Promise<{ file: string; finish: (landed: boolean) => Promise<void> }>;
}

/** What the cache records beside each entry. */
export interface CachedBase {
  version: string;
  /**
   * `reference` (an OCI image, `registry/repository@sha256:…`) for a base pulled from a registry:
   * a `base: {oci}` image, or, with `template`, the base layers of a pulled template.
   */
  source: { kind: BaseSpec['kind']; url?: string; file?: string; reference?: string; template?: string };
  cachedAt: string;
  host: string;
  /** Format of the source bytes; raw (or anything but a standalone qcow2) is converted. */
  sourceFormat: 'qcow2' | 'raw' | 'converted';
  bytes: number;
  /** `sha256:<hex>` of the cached qcow2 itself (equal to the version when it was a qcow2 already). */
  digest: string;
}

export function baseDigest(baseVersion: string): string {
  const hex = baseVersion.replace(/^sha256:/, '');
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new TransientError(`base version ${JSON.stringify(baseVersion)} is not a sha256 digest (not resolved?)`);
  return hex;
}

export function baseCacheDir(imagesDir: string): string {
  return path.join(path.resolve(imagesDir), 'base');
}

export function cachedBasePath(imagesDir: string, baseVersion: string): string {
  return path.join(baseCacheDir(imagesDir), 'sha256', `${baseDigest(baseVersion)}.qcow2`);
}

/**
 * Where a pull stages an image's files (`<imagesDir>/staging/<manifest hex>/`): on the images
 * filesystem, so landing is a rename; collected by gc once abandoned (src/gc/staging.ts).
 */
export function stagingDir(imagesDir: string, key: string): string {
  return path.join(path.resolve(imagesDir), 'staging', key);
}

export function partialPath(imagesDir: string, baseVersion: string): string {
  return path.join(baseCacheDir(imagesDir), 'downloads', `${baseDigest(baseVersion)}.part`);
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

export class BaseCache {
  /** version → the fetch under way: concurrent builds of one version share one download. */
  private readonly pending = new Map<string, Promise<string>>();
  /** Versions being fetched or converted right now: garbage collection leaves their files alone. */
  private readonly fetching = new Set<string>();
  /** Versions a build holds between fetching and defining its guest (from then on its disk's backing chain says). */
  private readonly holds = new Map<string, number>();
  /** Downloads started by this process (a test counts them; the log reports them). */
  downloads = 0;

  constructor(private readonly deps: BaseCacheDeps) {}

  get imagesDir(): string {
    return path.resolve(this.deps.imagesDir);
  }

  /** The cached qcow2 of this base version, fetching it first if needed. */
  ensure(base: BaseSpec, baseVersion: string, profileDir: string): Promise<string> {
    const known = this.pending.get(baseVersion);
    if (known) return known;
    const work = this.fill(base, baseVersion, profileDir).finally(() => {
      this.pending.delete(baseVersion);
      this.fetching.delete(baseDigest(baseVersion));
    });
    this.pending.set(baseVersion, work);
    return work;
  }

  /** Hex digests garbage collection must leave alone right now. */
  busy(): Set<string> {
    return new Set([...this.fetching, ...this.holds.keys()]);
  }

  /** Keeps a version from collection until the returned release is called. */
  hold(baseVersion: string): () => void {
    const hex = baseDigest(baseVersion);
    this.holds.set(hex, (this.holds.get(hex) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.holds.get(hex) ?? 1) - 1;
      if (left > 0) this.holds.set(hex, left);
      else this.holds.delete(hex);
    };
  }

  async describe(baseVersion: string): Promise<CachedBase | undefined> {
    const file = cachedBasePath(this.deps.imagesDir, baseVersion).replace(/\.qcow2$/, '.json');
    return readFile(file, 'utf8').then(
      (t) => JSON.parse(t) as CachedBase,
      () => undefined,
    );
  }

  private async fill(base: BaseSpec, baseVersion: string, profileDir: string): Promise<string> {
    const target = cachedBasePath(this.deps.imagesDir, baseVersion);
    if (await exists(target)) return target;
    if (base.kind === 'template')
      throw new ConfigError(`a profile that follows a pushed template has no base to fetch (${base.ref})`);
    const hex = baseDigest(baseVersion);
    this.fetching.add(hex);
    await mkdir(path.dirname(target), { recursive: true });
    let source: string;
    let removeSource = false;
    let pulled: { file: string; finish: (landed: boolean) => Promise<void> } | undefined;
    if (base.kind === 'oci') {
      if (!this.deps.pullOci) throw new ConfigError(`cannot pull ${base.ref}: no registry access in this command`);
      await this.deps.beforeFetch?.();
      this.downloads++;
      pulled = await this.deps.pullOci(base.ref, baseVersion);
      source = pulled.file;
      removeSource = true;
    } else if (base.kind === 'file') {
      source = path.resolve(profileDir, base.file);
      // The view was compiled earlier; caching changed bytes under the old digest would poison the cache.
      const actual = await sha256File(source);
      if (actual !== hex) {
        throw new TransientError(`base ${source} changed since the view was compiled (now sha256:${actual})`);
      }
    } else {
      source = partialPath(this.deps.imagesDir, baseVersion);
      await mkdir(path.dirname(source), { recursive: true });
      await this.deps.beforeFetch?.();
      this.downloads++;
      await downloadTo(base.url, source, this.deps.onProgress);
      const actual = await sha256File(source);
      if (actual !== hex) {
        // A wrong or truncated file must never be resumed from or cached.
        await rm(source, { force: true });
        const expected = base.kind === 'checksums' ? `the checksum list ${base.checksums} says` : 'base.sha256 pins';
        throw new TransientError(
          `downloaded ${base.url}: its sha256 is ${actual}, but ${expected} ${hex}; discarded, nothing cached`,
        );
      }
      removeSource = true;
    }
    const tmp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
    let landed = false;
    try {
      const standalone = await isStandaloneQcow2(source);
      if (standalone && removeSource) await rename(source, tmp);
      else if (standalone) await copyFile(source, tmp);
      // raw (or anything else qemu-img reads, or a qcow2 with a backing file): a standalone qcow2.
      else await this.deps.run('qemu-img', ['convert', '-O', 'qcow2', source, tmp]);
      const info = await stat(tmp);
      const record: CachedBase = {
        version: baseVersion,
        source:
          base.kind === 'file'
            ? { kind: 'file', file: source }
            : base.kind === 'oci'
              ? { kind: 'oci', reference: formatReference(pinned(parseReference(base.ref), baseVersion)) }
              : { kind: base.kind, url: base.url },
        cachedAt: this.deps.clock().toISOString(),
        host: hostname(),
        sourceFormat: standalone ? 'qcow2' : 'converted',
        bytes: info.size,
        // An OCI base's version is its manifest digest, never the file's own.
        digest: standalone && base.kind !== 'oci' ? baseVersion : `sha256:${await sha256File(tmp)}`,
      };
      await writeFileAtomic(target.replace(/\.qcow2$/, '.json'), `${JSON.stringify(record, null, 2)}\n`);
      await rename(tmp, target);
      landed = true;
      if (removeSource) await rm(source, { force: true });
    } finally {
      await rm(tmp, { force: true });
      await pulled?.finish(landed);
    }
    return target;
  }
}

/**
 * A base that arrived as the base layers of a pulled template (docs/oci-format.md): moved into the
 * cache under its version with the same descriptor a fetch writes (descriptor first, then the
 * rename, as in fill), so inspect, provenance and garbage collection treat it like any other base.
 * A version already cached is left as it is (the staged copy is not used).
 */
export async function adoptBase(
  imagesDir: string,
  baseVersion: string,
  staged: string,
  origin: { reference: string; template: string; cachedAt: string; digest?: string },
): Promise<string> {
  const target = cachedBasePath(imagesDir, baseVersion);
  if (await exists(target)) return target;
  await mkdir(path.dirname(target), { recursive: true });
  const info = await stat(staged);
  const record: CachedBase = {
    version: baseVersion,
    source: { kind: 'oci', reference: origin.reference, template: origin.template },
    cachedAt: origin.cachedAt,
    host: hostname(),
    sourceFormat: 'qcow2',
    bytes: info.size,
    digest:
      origin.digest && /^sha256:[0-9a-f]{64}$/.test(origin.digest)
        ? origin.digest
        : `sha256:${await sha256File(staged)}`,
  };
  await writeFileAtomic(descriptorPath(imagesDir, baseVersion), `${JSON.stringify(record, null, 2)}\n`);
  await rename(staged, target);
  return target;
}

export function descriptorPath(imagesDir: string, baseVersion: string): string {
  return cachedBasePath(imagesDir, baseVersion).replace(/\.qcow2$/, '.json');
}

const QCOW_MAGIC = 0x514649fb; // "QFI\xfb"

/** A qcow2 without a backing file can be cached as it is; anything else is converted. */
async function isStandaloneQcow2(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(16);
    const { bytesRead } = await fh.read(head, 0, 16, 0);
    return bytesRead === 16 && head.readUInt32BE(0) === QCOW_MAGIC && head.readBigUInt64BE(8) === 0n;
  } finally {
    await fh.close();
  }
}

/** `42.0 MiB of 1.2 GiB (3%)`: one progress line. */
export function formatProgress(p: Progress): string {
  const of = p.total ? ` of ${formatBytes(p.total)} (${Math.floor((p.received / p.total) * 100)}%)` : '';
  return `${formatBytes(p.received)}${of}${p.resumedFrom > 0 ? `, resumed at ${formatBytes(p.resumedFrom)}` : ''}`;
}
