/**
 * corral's OCI image format (docs/oci-format.md): an OCI image manifest whose config blob
 * describes the files of a template (disk, base, boot files) and carries its sanitised domain XML
 * and provenance, and whose layers are the files cut into fixed-size chunks, each compressed with
 * zstd on its own. All-zero chunks are not stored. Everything here is deterministic, so the same
 * files give the same digests on any host.
 */
export const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
export const ARTIFACT_TYPE = 'application/vnd.corral.template.v1';
export const CONFIG_MEDIA_TYPE = 'application/vnd.corral.template.config.v1+json';
export const CHUNK_MEDIA_TYPE = 'application/vnd.corral.chunk.v1+zstd';
/** A chunk stored as it is, because a sample of it did not compress (see push.ts). */
export const RAW_CHUNK_MEDIA_TYPE = 'application/vnd.corral.chunk.v1';

export const ANNOTATION = {
  file: 'dev.corral.file',
  offset: 'dev.corral.offset',
  size: 'dev.corral.uncompressed-size',
  digest: 'dev.corral.uncompressed-digest',
  profile: 'dev.corral.profile',
  gen: 'dev.corral.gen',
} as const;

/** 32 MiB: small enough that a one-block change re-sends little, big enough to keep requests few. */
export const DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024;
export const ZSTD_LEVEL = 3;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface FileEntry {
  /** Name of the file inside the image: `disk`, `base`, `kernel`, `initrd`. */
  name: string;
  /** Uncompressed size in bytes; chunks absent from the layers are zeros. */
  size: number;
  /** Disk image format (`qcow2`, `raw`) for disks. */
  format?: string;
  /** The file this disk's qcow2 header names as its backing file (another entry's name). */
  backing?: string;
}

export interface TemplateInfo {
  profile: string;
  gen: string;
  inputsHash: string;
  baseVersion: string;
  createdAt: string;
  /** The template's domain XML without host paths, uuid, MAC addresses or corral's metadata. */
  domainXml: string;
}

export interface ImageConfig {
  corralFormat: 1;
  chunkSize: number;
  compression: 'zstd';
  files: FileEntry[];
  template?: TemplateInfo;
  /** The template's provenance manifest (state/templates/<template>/manifest.json), when it has one. */
  provenance?: unknown;
}

export interface ChunkLayer {
  file: string;
  offset: number;
  size: number;
  uncompressedDigest: string;
  blob: Descriptor;
}

export function chunkDescriptor(
  file: string,
  offset: number,
  size: number,
  uncompressedDigest: string,
  digest: string,
  compressedSize: number,
  mediaType = CHUNK_MEDIA_TYPE,
): Descriptor {
  return {
    mediaType,
    digest,
    size: compressedSize,
    annotations: {
      [ANNOTATION.file]: file,
      [ANNOTATION.offset]: String(offset),
      [ANNOTATION.size]: String(size),
      [ANNOTATION.digest]: uncompressedDigest,
    },
  };
}

/** Reads and checks a manifest and its config against this format; throws a message naming what is wrong. */
export function parseImage(
  manifestBytes: Buffer,
  configBytes: Buffer,
): { manifest: ImageManifest; config: ImageConfig; chunks: ChunkLayer[] } {
  const manifest = JSON.parse(manifestBytes.toString('utf8')) as ImageManifest;
  if (manifest.config?.mediaType !== CONFIG_MEDIA_TYPE)
    throw new Error(
      `not a corral image: its config is ${manifest.config?.mediaType ?? 'missing'}, not ${CONFIG_MEDIA_TYPE}`,
    );
  const config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  if (config.corralFormat !== 1)
    throw new Error(`corral image format ${String(config.corralFormat)} is not supported (this corral reads 1)`);
  if (config.compression !== 'zstd') throw new Error(`unsupported chunk compression ${String(config.compression)}`);
  const files = new Map(config.files.map((f) => [f.name, f]));
  const chunks = manifest.layers.map((l, i): ChunkLayer => {
    const a = l.annotations ?? {};
    const file = a[ANNOTATION.file];
    const offset = Number(a[ANNOTATION.offset]);
    const size = Number(a[ANNOTATION.size]);
    const entry = file === undefined ? undefined : files.get(file);
    if (
      (l.mediaType !== CHUNK_MEDIA_TYPE && l.mediaType !== RAW_CHUNK_MEDIA_TYPE) ||
      !entry ||
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(size) ||
      offset < 0 ||
      offset + size > entry.size ||
      !/^sha256:[0-9a-f]{64}$/.test(a[ANNOTATION.digest] ?? '') ||
      !/^sha256:[0-9a-f]{64}$/.test(l.digest) ||
      (l.mediaType === RAW_CHUNK_MEDIA_TYPE && (l.digest !== a[ANNOTATION.digest] || l.size !== size))
    )
      throw new Error(`layer ${i} (${l.digest}) is not a valid corral chunk`);
    return { file: file!, offset, size, uncompressedDigest: a[ANNOTATION.digest]!, blob: l };
  });
  return { manifest, config, chunks };
}
