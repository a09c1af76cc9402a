import { resolve } from 'node:path';
import { parseListen, type HostConfig } from '../../config/host-config.js';
import { ConfigError } from '../../errors.js';
import type { Hypervisor } from '../../hypervisor/hypervisor.js';
import { createHypervisor } from '../../hypervisor/create.js';
import { refreshView } from '../../reconcile/refresh-view.js';
import { FileDigests } from '../../sources/inputs.js';
import { EXIT, type Command, type CommandContext } from '../command.js';
import { openRuntime } from '../../reconcile/runtime.js';

export const serveCommand: Command = {
  name: 'serve',
  summary: 'The console: JSON API, live dashboard and /metrics over HTTP (127.0.0.1:8470 by default).',
  usage: 'corral serve [--listen ADDR] [--token-file FILE]',
  optionsHelp: `  --listen ADDR        host:port, [v6]:port, :port (all interfaces) or a port; overrides server.listen
                       (default 127.0.0.1:8470; port 0 picks a free one, logged as "corral console listening")
  --token-file FILE    the file holding the bearer token for POST requests; overrides server.tokenFile

Reads are open; POST requests need "Authorization: Bearer <token>" with the token in server.tokenFile.
Without "watch", serve takes the state-dir lock only while it runs the passes a request asked for
(and the builds they start), so "reconcile --once" from cron keeps working; when a "watch" on this
host holds the lock, serve sends it SIGHUP to run the pass. On a host, prefer "corral watch --serve".
See docs/api.md. SIGTERM/SIGINT stop it once the passes it started end (exit 0); a second one exits
at once (143/130).`,
  options: { listen: { type: 'string' }, 'token-file': { type: 'string' } },
  async run(ctx) {
    const config = withServerOptions(ctx.config, ctx.args);
    const { startServer } = await import('../../server/server.js');
    const { lockingTrigger } = await import('../../server/trigger.js');
    // Reads only: the passes serve runs open their own runtime (trigger.ts).
    const runtime = await openRuntime({ ...ctx, config }, { readOnly: true });
    const digests = new FileDigests();
    let trigger: ReturnType<typeof lockingTrigger> | undefined;
    const server = await startServer({
      config,
      log: ctx.log,
      events: runtime.events,
      clock: ctx.now,
      hypervisor: () => readHypervisor(ctx, config, runtime.hypervisor, trigger?.current()),
      trigger: ({ publish, look }) =>
        (trigger = lockingTrigger({
          config,
          validators: ctx.validators,
          log: ctx.log,
          // Passes run under the state-dir lock, so they read guests' channels (released after).
          openRuntime: () => openRuntime({ ...ctx, config }, { holdsLock: true }),
          publish,
          look,
        })),
      preview: async () => {
        const refreshed = await refreshView(config, {
          validators: ctx.validators,
          digests,
          now: ctx.now(),
          readOnly: true,
        });
        return refreshed.view;
      },
      pollMs: runtime.pollMs === 10 ? 500 : 2000,
      inWatch: false,
    });
    await new Promise<void>((resolve) => ctx.signals.onStop(resolve, { secondSignalExits: true }));
    ctx.log.info('stopping: waiting for the passes this serve started');
    await server.close();
    return EXIT.ok;
  },
};

/**
 * What reads observe. libvirt is the live truth for anyone; the memory backend lives in a file its
 * owner rewrites, so unless this process is running the passes, each read takes a fresh,
 * never-saved copy of it.
 */
async function readHypervisor(
  ctx: CommandContext,
  config: HostConfig,
  own: Hypervisor,
  running: Hypervisor | undefined,
): Promise<Hypervisor> {
  if (running) return running;
  if (config.hypervisor !== 'memory') return own;
  return createHypervisor(config, { log: ctx.log, clock: ctx.now, env: ctx.env, readOnly: true });
}

/** `--listen` and `--token-file` over the host config's `server` section. */
export function withServerOptions(config: HostConfig, args: CommandContext['args']): HostConfig {
  const { listen, 'token-file': tokenFile } = args;
  let server = config.server;
  if (typeof listen === 'string') {
    const parsed = parseListen(listen);
    if (!parsed)
      throw new ConfigError(`--listen must be host:port, [v6]:port, :port or a port number, not "${listen}"`);
    server = { ...server, ...parsed };
  }
  if (typeof tokenFile === 'string') server = { ...server, tokenFile: resolve(tokenFile) };
  return { ...config, server };
}
