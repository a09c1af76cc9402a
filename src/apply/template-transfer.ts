/**
 * Templates to and from a registry: the composition of a backend's template export/import with
 * the chunked image format. The provenance manifest (state/templates/<template>/manifest.json)
 * travels in the image config and is written back beside the pulled template before the
 * template itself appears.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import { templateName } from '../hypervisor/names.js';
import { writeFileAtomic } from '../util/atomic-write.js';
import { RegistryClient } from '../oci/client.js';
import type { CredentialStore } from '../oci/credentials.js';
import { DEFAULT_CHUNK_SIZE } from '../oci/format.js';
import { fetchImage, pullImage, type PullProgress, type PullStats, type ResolvedImage } from '../oci/pull.js';
import { pushImage, type PushProgress, type PushStats } from '../oci/push.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import type { CompiledProfile } from '../sources/view.js';
import type { ApplyDeps } from './apply.js';

export interface TransferDeps {
  hypervisor: Hypervisor;
  stateDir: string;
  prefix: string;
  credentials: CredentialStore;
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
    pushTarget(ref, deps.credentials, opts),
  );
}

/** A disk image file as a base image (`base: {oci}` in a profile): one `disk` file, no template. */
export async function pushBaseFile(
  file: string,
  ref: Reference,
  credentials: CredentialStore,
  opts: PushTemplateOptions,
): Promise<PushStats> {
  if (ref.digest) throw new ConfigError(`push to a tag, not a digest: ${formatReference(ref)}`);
  const head = Buffer.alloc(4);
  const fh = await open(file, 'r');
  await fh.read(head, 0, 4, 0).finally(() => fh.close());
  const format = head.readUInt32BE(0) === 0x514649fb ? 'qcow2' : 'raw';
  return pushImage([{ name: 'disk', path: file, format }], {}, pushTarget(ref, credentials, opts));
}

/** Where and how a push goes: the same for a template and for a base image file. */
function pushTarget(ref: Reference, credentials: CredentialStore, opts: PushTemplateOptions) {
  return {
    client: clientFor(ref, credentials),
    repository: ref.repository,
    ...(ref.tag ? { tag: ref.tag } : {}),
    chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
    concurrency: opts.concurrency,
    ...(opts.uploadChunkBytes ? { uploadChunkBytes: opts.uploadChunkBytes } : {}),
    ...(opts.mountFrom ? { mountFrom: opts.mountFrom } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
  };
}

export interface PullTemplateOptions {
  /** Profile name the template lands under (default: the one it was built for). */
  as?: string;
  /** Replace the recorded inputs hash (profiles that follow a registry use the image digest). */
  inputsHash?: string;
  /**
   * Name the generation by the image digest instead of the build's inputs (followers): a template
   * pulled by hand under the same profile never stands in for the digest a profile follows.
   */
  genFromDigest?: boolean;
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
  const gen = opts.genFromDigest ? `${t.gen.replace(/-[0-9a-f]{8}$/, '')}-${image.digest.slice(7, 15)}` : t.gen;
  const name = templateName(deps.prefix, profile, gen);
  const observed = await deps.hypervisor.observe();
  if (observed.guests.some((g) => g.name === name))
    return { template: name, digest: image.digest, present: true, baseReused: true };
  const disk = image.config.files.find((f) => f.name === 'disk');
  if (!disk) throw new ConfigError(`${formatReference(ref)}: the image has no disk`);
  const backing = disk.backing === 'base';
  const baseReused = backing && (await io.hasBase(t.baseVersion));
  const staging = io.stagingDir(image.digest.replace(/^sha256:/, ''));
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
    });
  } catch (err) {
    if (image.config.provenance !== undefined) await rm(path.dirname(provenance), { recursive: true, force: true });
    throw err;
  }
  await rm(staging, { recursive: true, force: true });
  return { template: name, digest: image.digest, present: false, baseReused, stats };
}

/** `publish: {oci}`: push the newly promoted template; a failed push is reported, the template stays live. */
export async function publishPromoted(
  profile: CompiledProfile,
  template: string,
  deps: Pick<ApplyDeps, 'hypervisor' | 'registry' | 'log'>,
): Promise<void> {
  if (!deps.registry || !profile.publish) return;
  try {
    const stats = await pushTemplate(
      { hypervisor: deps.hypervisor, ...deps.registry },
      template,
      parseReference(profile.publish.oci),
      {
        concurrency: 4,
      },
    );
    deps.log.info(
      { template, reference: profile.publish.oci, digest: stats.digest, uploadedBytes: stats.uploadedBytes },
      'published',
    );
  } catch (err) {
    deps.log.error({ template, reference: profile.publish.oci, error: (err as Error).message }, 'publish failed');
  }
}
