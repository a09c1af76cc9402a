import { ConfigError } from '../../errors.js';
import { PROFILE_NAME } from '../../hypervisor/names.js';
import { dockerCredentialStore } from '../../oci/credentials.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { pullTemplate } from '../../apply/template-transfer.js';
import { formatBytes } from '../../util/size.js';
import { EXIT, type Command } from '../command.js';
import { progressLine } from '../progress.js';
import { openRuntime } from '../../reconcile/runtime.js';
import { positiveInt } from './options.js';

export const pullCommand: Command = {
  name: 'pull',
  summary:
    'Pull a template from an OCI registry; it appears only once every chunk is verified, and a killed pull resumes.',
  usage: 'corral pull <registry/repository[:tag|@digest]> [--as PROFILE] [--concurrency N] [--json]',
  optionsHelp: `  --as PROFILE         land the template under this profile name (default: the profile it was built for)
  --concurrency N      chunks downloaded and written at once (default 4)`,
  options: { as: { type: 'string' }, concurrency: { type: 'string' } },
  positionals: 1,
  minPositionals: 1,
  async run(ctx) {
    const ref = parseReference(ctx.positionals[0] as string);
    const as = ctx.args.as as string | undefined;
    if (as !== undefined && !PROFILE_NAME.test(as))
      throw new ConfigError(`--as ${JSON.stringify(as)} is not a valid profile name`);
    const concurrency = positiveInt(ctx.args.concurrency, '--concurrency', 4);
    const runtime = await openRuntime(ctx);
    const progress = progressLine(ctx.io, process.stderr.isTTY === true, `pull ${formatReference(ref)}`);
    const result = await pullTemplate(
      {
        hypervisor: runtime.hypervisor,
        stateDir: ctx.config.stateDir,
        prefix: ctx.config.prefix,
        credentials: dockerCredentialStore(ctx.env),
      },
      ref,
      {
        ...(as ? { as } : {}),
        concurrency,
        onProgress: (p) =>
          progress.update(
            p.chunksTotal ? p.chunksDone / p.chunksTotal : 1,
            `${p.chunksDone}/${p.chunksTotal} chunks, ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}, ${formatBytes(p.bytesDownloaded)} downloaded`,
          ),
      },
    );
    if (result.present) progress.done(`${result.template} is already on this host`);
    else
      progress.done(
        `${result.stats?.chunks ?? 0} chunks (${result.stats?.resumedChunks ?? 0} from an earlier attempt), ${formatBytes(result.stats?.downloadedBytes ?? 0)} downloaded${result.baseReused ? ', base already here' : ''}`,
      );
    if (ctx.json) ctx.io.out(`${JSON.stringify(result, null, 2)}\n`);
    else ctx.io.out(`${result.template}\n`);
    return EXIT.ok;
  },
};
