/**
 * Templates to and from a registry: the composition of a backend's template export/import with
 * the chunked image format. The provenance manifest (state/templates/<template>/manifest.json)
 * travels in the image config and is written back beside the pulled template before the
 * template itself appears.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, TransientError } from '../errors.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import { templateName } from '../hypervisor/names.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { ChunkCache } from '../oci/chunk-cache.js';
import { RegistryClient } from '../oci/client.js';
import type { CredentialStore } from '../oci/credentials.js';
import { DEFAULT_CHUNK_SIZE } from '../oci/format.js';
import { fetchImage, pullImage, type PullProgress, type PullStats, type ResolvedImage } from '../oci/pull.js';
import { pushImage, type PushProgress, type PushStats } from '../oci/push.js';
import { formatReference, parseReference, pinned, type Reference } from '../oci/reference.js';
import { stagingDir, type BaseCache } from '../images/base-cache.js';
import { lockStaging } from '../state/staging-lock.js';
import type { Logger } from 'pino';

export interface TransferDeps {
  hypervisor: Hypervisor;
  stateDir: string;
  prefix: string;
  credentials: CredentialStore;
  clock?: () => Date;
  log?: Logger;
}

export function provenanceFile(stateDir: string, template: string): string {
  return path.join(stateDir, 'templates', template, 'manifest.json');
}

function transferable(h: Hypervisor): NonNullable<Hypervisor['templates']> {
  if (!h.templates) throw new ConfigError(`the ${h.kind} hypervisor cannot push or pull templates`);
  return h.templates;
}

export function clientFor(ref: Reference, credentials: CredentialStore): RegistryClient {
  return new RegistryClient(ref.registry, { credentials });
}

export interface PushTemplateOptions {
  concurrency: number;
  chunkSize?: number;
  uploadChunkBytes?: number;
  mountFrom?: string[];
  onProgress?: (p: PushProgress) => void;
}

export async function pushTemplate(
  deps: TransferDeps,
  template: string,
  ref: Reference,
  opts: PushTemplateOptions,
): Promise<PushStats> {
  if (ref.digest) throw new ConfigError(`push to a tag, not a digest: ${formatReference(ref)}`);
  const exported = await transferable(deps.hypervisor).export(template);
  const provenance = await readFile(provenanceFile(deps.stateDir, template), 'utf8').then(
    (t) => JSON.parse(t) as unknown,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    },
  );
  const { meta } = exported;
  return pushImage(
    exported.files,
    {
      template: {
        profile: meta.profile,
        gen: meta.gen,
        inputsHash: meta.inputsHash,
        baseVersion: meta.baseVersion,
        createdAt: meta.createdAt,
        domainXml: exported.domainXml,
      },
      ...(provenance !== undefined ? { provenance } : {}),
    },
    pushTarget(ref, deps.credentials, opts, deps.stateDir),
  ).finally(() => pruneChunkCache(deps.stateDir));
}

/** A disk image file as a base image (`base: {oci}` in a profile): one `disk` file, no template. */
export async function pushBaseFile(
  file: string,
  ref: Reference,
  credentials: CredentialStore,
  opts: PushTemplateOptions,
  stateDir?: string,
): Promise<PushStats> {
  if (ref.digest) throw new ConfigError(`push to a tag, not a digest: ${formatReference(ref)}`);
  const head = Buffer.alloc(4);
  const fh = await open(file, 'r');
  await fh.read(head, 0, 4, 0).finally(() => fh.close());
  const format = head.readUInt32BE(0) === 0x514649fb ? 'qcow2' : 'raw';
  return pushImage([{ name: 'disk', path: file, format }], {}, pushTarget(ref, credentials, opts, stateDir)).finally(
    () => stateDir && pruneChunkCache(stateDir),
  );
}

/** Chunk digests of pushed files (src/oci/chunk-cache.ts), so an unchanged file is not read again. */
function chunkCache(stateDir: string): ChunkCache {
  return new ChunkCache(path.join(stateDir, 'oci-chunks'));
}

/** Forgets files that are gone (a pruned template's disk); never fails a push. */
async function pruneChunkCache(stateDir: string): Promise<void> {
  await chunkCache(stateDir)
    .prune()
    .catch(() => undefined);
}

/** Where and how a push goes: the same for a template and for a base image file. */
function pushTarget(ref: Reference, credentials: CredentialStore, opts: PushTemplateOptions, stateDir?: string) {
  return {
    client: clientFor(ref, credentials),
    repository: ref.repository,
    ...(ref.tag ? { tag: ref.tag } : {}),
    chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
    concurrency: opts.concurrency,
    ...(opts.uploadChunkBytes ? { uploadChunkBytes: opts.uploadChunkBytes } : {}),
    ...(opts.mountFrom ? { mountFrom: opts.mountFrom } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(stateDir ? { chunkCache: chunkCache(stateDir) } : {}),
  };
}

/**
 * `base: {oci}`: pulls the base image `refText` pinned at `version` (a manifest digest) into its
 * staging dir, holding the staging lock until `finish` (BaseCache moves the disk into the cache,
 * then finishes). A failed pull releases the lock and keeps the staging dir: the next try resumes.
 */
export async function pullBaseImage(
  deps: { credentials: CredentialStore; imagesDir: string; log?: Logger },
  refText: string,
  version: string,
  opts: { concurrency: number; onProgress?: (p: PullProgress) => void },
): Promise<{ file: string; finish: (landed: boolean) => Promise<void> }> {
  const ref = pinned(parseReference(refText), version);
  const shown = formatReference(ref);
  const client = clientFor(ref, deps.credentials);
  const image = await fetchImage(client, ref.repository, version);
  if (!image)
    throw new TransientError(`${shown}: no such image on ${ref.registry} (deleted since the tag was resolved?)`);
  if (image.config.template)
    throw new ConfigError(
      `${shown} is a template, not a base image: run it with "template: {oci: …}", or push a disk with "corral push ./base.qcow2 <ref>"`,
    );
  const disk = image.config.files.find((f) => f.name === 'disk');
  if (!disk || image.config.files.length !== 1 || disk.backing)
    throw new ConfigError(
      `${shown} is not a base image (one standalone disk file, as "corral push ./base.qcow2" makes)`,
    );
  const staging = stagingDir(deps.imagesDir, version.replace(/^sha256:/, ''));
  const lock = await lockStaging(staging, `pull ${shown}`, deps.log);
  try {
    const { files } = await pullImage(image, staging, {
      client,
      repository: ref.repository,
      concurrency: opts.concurrency,
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    return {
      file: files['disk']!,
      finish: async (landed) => {
        if (landed) await rm(staging, { recursive: true, force: true });
        await lock.release();
      },
    };
  } catch (err) {
    await lock.release();
    throw err;
  }
}

export interface PullTemplateOptions {
  /** Profile name the template lands under (default: the one it was built for). */
  as?: string;
  /** Replace the recorded inputs hash (profiles that follow a registry use the image digest). */
  inputsHash?: string;
  /**
   * Land under this generation instead of the build's (followers: the one the planner chose), so a
   * template pulled by hand under the same profile never stands in for the digest a profile follows.
   */
  gen?: string;
  /** The pass's base cache: the carried base is held from garbage collection until the template is defined. */
  bases?: BaseCache;
  concurrency: number;
  onProgress?: (p: PullProgress) => void;
  /** An image already fetched (manifest + config) by the caller. */
  image?: ResolvedImage;
}

export interface PullResult {
  template: string;
  digest: string;
  /** True when the template was already on this host: nothing was downloaded. */
  present: boolean;
  baseReused: boolean;
  stats?: PullStats;
}

export async function pullTemplate(deps: TransferDeps, ref: Reference, opts: PullTemplateOptions): Promise<PullResult> {
  const io = transferable(deps.hypervisor);
  const client = clientFor(ref, deps.credentials);
  const image = opts.image ?? (await fetchImage(client, ref.repository, ref.digest ?? ref.tag ?? 'latest'));
  if (!image) throw new ConfigError(`${formatReference(ref)}: no such image on ${ref.registry}`);
  const t = image.config.template;
  if (!t) throw new ConfigError(`${formatReference(ref)} is a corral image but not a template`);
  const profile = opts.as ?? t.profile;
  const gen = opts.gen ?? t.gen;
  const name = templateName(deps.prefix, profile, gen);
  const observed = await deps.hypervisor.observe();
  if (observed.guests.some((g) => g.name === name))
    return { template: name, digest: image.digest, present: true, baseReused: true };
  const disk = image.config.files.find((f) => f.name === 'disk');
  if (!disk) throw new ConfigError(`${formatReference(ref)}: the image has no disk`);
  const backing = disk.backing === 'base';
  const baseReused = backing && (await io.hasBase(t.baseVersion));
  const staging = io.stagingDir(image.digest.replace(/^sha256:/, ''));
  // Held from the first write until the files have landed: no other pull writes here, and gc keeps it.
  const lock = await lockStaging(staging, `pull ${formatReference(pinned(ref, image.digest))}`, deps.log);
  const release = backing ? opts.bases?.hold(t.baseVersion) : undefined;
  try {
    const { files, stats } = await pullImage(image, staging, {
      client,
      repository: ref.repository,
      concurrency: opts.concurrency,
      skip: new Set(baseReused ? ['base'] : []),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
    const provenance = provenanceFile(deps.stateDir, name);
    if (image.config.provenance !== undefined) {
      await mkdir(path.dirname(provenance), { recursive: true });
      await writeFileAtomic(provenance, `${JSON.stringify(image.config.provenance, null, 2)}\n`);
    }
    const recordedBase = (image.config.provenance as { base?: { digest?: unknown } } | undefined)?.base?.digest;
    try {
      await io.import({
        name,
        meta: {
          profile,
          gen,
          inputsHash: opts.inputsHash ?? t.inputsHash,
          baseVersion: t.baseVersion,
          createdAt: t.createdAt,
        },
        domainXml: t.domainXml,
        files,
        backing,
        baseOrigin: {
          reference: formatReference(pinned(ref, image.digest)),
          cachedAt: (deps.clock ?? (() => new Date()))().toISOString(),
          // The build host's descriptor digest of the same bytes (every chunk was verified against the manifest).
          ...(typeof recordedBase === 'string' ? { digest: recordedBase } : {}),
        },
      });
    } catch (err) {
      if (image.config.provenance !== undefined) await rm(path.dirname(provenance), { recursive: true, force: true });
      throw err;
    }
    await rm(staging, { recursive: true, force: true });
    return { template: name, digest: image.digest, present: false, baseReused, stats };
  } finally {
    release?.();
    await lock.release();
  }
}
