import { ConfigError } from '../../errors.js';
import { parseName } from '../../hypervisor/names.js';
import { newestFirst } from '../../plan/gen-time.js';
import { dockerCredentialStore } from '../../oci/credentials.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { pushBaseFile, pushTemplate } from '../../apply/template-transfer.js';
import type { PushProgress } from '../../oci/push.js';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { formatBytes, parseSize } from '../../util/size.js';
import { EXIT, type Command } from '../command.js';
import { progressLine } from '../progress.js';
import { openRuntime } from '../../reconcile/runtime.js';
import { positiveInt } from './options.js';

export const pushCommand: Command = {
  name: 'push',
  summary:
    "Push a template (or a profile's newest template, or a disk image file as a base) to an OCI registry, sending only chunks it lacks.",
  usage: 'corral push <template|profile|./base.qcow2> <registry/repository:tag> [--concurrency N] [--json]',
  optionsHelp: `  --concurrency N      chunks compressed and uploaded at once (default 4)
  --chunk-size SIZE    uncompressed chunk size (default 32M; changing it changes every digest)
  --upload-chunk-size SIZE
                       send blobs above SIZE as PATCH pieces of SIZE (for registries that cap requests)
  --mount-from REPO    try mounting missing blobs from this repository of the same registry first`,
  options: {
    concurrency: { type: 'string' },
    'chunk-size': { type: 'string' },
    'upload-chunk-size': { type: 'string' },
    'mount-from': { type: 'string', multiple: true },
  },
  positionals: 2,
  minPositionals: 2,
  async run(ctx) {
    const [what, refText] = ctx.positionals as [string, string];
    const ref = parseReference(refText);
    const concurrency = positiveInt(ctx.args.concurrency, '--concurrency', 4);
    const chunkSize = sizeOption(ctx.args['chunk-size'], '--chunk-size');
    const uploadChunkBytes = sizeOption(ctx.args['upload-chunk-size'], '--upload-chunk-size');
    const credentials = dockerCredentialStore(ctx.env);
    const options = {
      concurrency,
      ...(chunkSize ? { chunkSize } : {}),
      ...(uploadChunkBytes ? { uploadChunkBytes } : {}),
      ...(Array.isArray(ctx.args['mount-from']) ? { mountFrom: ctx.args['mount-from'] as unknown as string[] } : {}),
    };
    const file = await baseFile(what);
    const template =
      file ?? (await pickTemplate(what, ctx.config.prefix, async () => (await openRuntime(ctx)).hypervisor.observe()));
    const progress = progressLine(ctx.io, process.stderr.isTTY === true, `push ${template}`);
    const onProgress = (p: PushProgress) =>
      progress.update(
        p.bytesTotal ? p.bytesRead / p.bytesTotal : 1,
        `${formatBytes(p.bytesRead)}/${formatBytes(p.bytesTotal)} read, ${p.chunksDone}/${p.chunksSeen} chunks, ${formatBytes(p.bytesUploaded)} sent`,
      );
    const stats = file
      ? await pushBaseFile(file, ref, credentials, { ...options, onProgress })
      : await pushTemplate(
          {
            hypervisor: (await openRuntime(ctx)).hypervisor,
            stateDir: ctx.config.stateDir,
            prefix: ctx.config.prefix,
            credentials,
          },
          template,
          ref,
          { ...options, onProgress },
        );
    progress.done(
      `${stats.chunks} chunks (${stats.zeroChunks} zero), ${stats.uploadedBlobs} blobs uploaded (${formatBytes(stats.uploadedBytes)}), ${stats.skippedBlobs} already there, ${stats.mountedBlobs} mounted`,
    );
    const pushed = formatReference({ ...ref, digest: stats.digest });
    if (ctx.json) ctx.io.out(`${JSON.stringify({ template, reference: pushed, ...stats }, null, 2)}\n`);
    else ctx.io.out(`${pushed}\n`);
    return EXIT.ok;
  },
};

function sizeOption(value: unknown, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = parseSize(value);
  if (!n) throw new ConfigError(`${flag} must be a size such as 4M or 32M, not ${JSON.stringify(value)}`);
  return n;
}

/** A disk image file to push as a base (`base: {oci}`), when `what` names one. */
async function baseFile(what: string): Promise<string | undefined> {
  if (!what.includes('/') && !/\.(qcow2|raw|img)$/.test(what)) return undefined;
  const info = await stat(what).catch(() => undefined);
  if (!info?.isFile()) throw new ConfigError(`${what} is not a file`);
  return path.resolve(what);
}

/** A template guest name as given, or the newest template of the named profile. */
async function pickTemplate(
  what: string,
  prefix: string,
  observe: () => Promise<{ guests: { name: string; role: string; profile: string; gen?: string }[] }>,
): Promise<string> {
  const parsed = parseName(prefix, what);
  const { guests } = await observe();
  if (parsed?.role === 'template') {
    if (!guests.some((g) => g.name === what)) throw new ConfigError(`no template guest named ${what}`);
    return what;
  }
  if (parsed) throw new ConfigError(`${what} is a ${parsed.role} guest, not a template or profile`);
  const templates = guests.filter((g) => g.role === 'template' && g.profile === what);
  const newest = [...templates].sort(newestFirst as (a: unknown, b: unknown) => number)[0];
  if (!newest) throw new ConfigError(`profile ${what} has no template on this host (build it first)`);
  return newest.name;
}
