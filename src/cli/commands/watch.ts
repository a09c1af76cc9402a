import { ConfigError } from '../../errors.js';
import { findConfigFile, loadHostConfig, type HostConfig } from '../../config/host-config.js';
import { acquireLock } from '../../state/lock.js';
import { parseDuration } from '../../util/duration.js';
import { EXIT, type Command, type CommandContext } from '../command.js';
import { openRuntime } from '../../reconcile/runtime.js';
import { withServerOptions } from './serve.js';

type PassInfo = { phase: 'start' | 'done'; at: string; triggers: string[]; durationMs?: number };

export const watchCommand: Command = {
  name: 'watch',
  summary:
    'Long-running reconciler: a pass when the sources change, when one of its guests starts, stops or crashes, when the last plan asked to look again (a back-off expiry, say), and every resync interval.',
  usage: 'corral watch [--wait] [--debounce MS] [--keep-failed] [--serve [--listen ADDR] [--token-file FILE]]',
  optionsHelp: `  --wait               wait for the state-dir lock instead of exiting with code 75
  --debounce MS        quiet time after the last file or guest event before a pass (default: the config's
                       watch.debounce, else 300 ms); also takes 500ms, 2s
  --keep-failed        set failed rebuilds aside as <prefix>-failed-<profile>@<gen> instead of
                       destroying them (never promoted; collected after gc.keepFailedGuests)
  --serve              also serve the console (API, dashboard, /metrics) from this process, on
                       server.listen (default 127.0.0.1:8470); see "corral serve --help" and docs/api.md
  --listen ADDR        with --serve: host:port, [v6]:port, :port or a port; overrides server.listen
  --token-file FILE    with --serve: the bearer token file for POST requests; overrides server.tokenFile

Signals: SIGHUP reloads the host config and resyncs; SIGTERM/SIGINT stop taking new work, let
running actions finish, abandon running builds (the next pass discards them), release the lock
and exit 0; a second SIGTERM/SIGINT exits at once (143/130) without waiting, as a crash would (the
next run heals what was left half-done). Exit codes: 0 stopped by a signal, 1 error, 75 the state
dir is locked by another run.`,
  options: {
    wait: { type: 'boolean' },
    debounce: { type: 'string' },
    'keep-failed': { type: 'boolean' },
    serve: { type: 'boolean' },
    listen: { type: 'string' },
    'token-file': { type: 'string' },
  },
  async run(ctx) {
    const debounceMs = parseDebounce(ctx.args.debounce);
    const withOverrides = (config: HostConfig): HostConfig => {
      const hypervisor = ctx.args.hypervisor;
      if (hypervisor === 'libvirt' || hypervisor === 'memory') config.hypervisor = hypervisor;
      if (debounceMs !== undefined) config.watch.debounceMs = debounceMs;
      return config;
    };
    if ((ctx.args.listen !== undefined || ctx.args['token-file'] !== undefined) && !ctx.args.serve)
      throw new ConfigError('--listen and --token-file need --serve');
    const config = withServerOptions(withOverrides(ctx.config), ctx.args);
    const lock = await acquireLock(config.stateDir, { command: 'watch', wait: ctx.args.wait === true, log: ctx.log });
    try {
      // Loaded on demand: chokidar and the daemon cost start-up time every other command need not pay.
      const { WatchDaemon } = await import('../../watch/daemon.js');
      const runtime = await openRuntime(
        { ...ctx, config },
        { keepFailed: ctx.args['keep-failed'] === true, holdsLock: true },
      );
      let onPass: ((pass: PassInfo) => void) | undefined;
      const daemon = new WatchDaemon({
        config,
        loadConfig: async () => withOverrides(await reloadHostConfig(ctx)),
        validators: ctx.validators,
        log: ctx.log,
        runtime,
        ownerToken: lock.holder.token,
        onPass: (pass) => onPass?.(pass),
      });
      let server: { close(): Promise<void> } | undefined;
      if (ctx.args.serve) {
        const { startServer } = await import('../../server/server.js');
        const { daemonTrigger } = await import('../../server/trigger.js');
        server = await startServer({
          config,
          log: ctx.log,
          events: runtime.events,
          clock: ctx.now,
          hypervisor: async () => runtime.hypervisor,
          trigger: ({ publish, look }) => {
            onPass = (pass) => {
              // Best effort: the daemon does not wait, but the look starts before the pass acts.
              if (pass.phase === 'start') void look();
              publish({ type: 'pass', by: 'watch', ...pass });
            };
            return daemonTrigger(() => daemon.requestPass());
          },
          pollMs: config.hypervisor === 'memory' ? 500 : 2000,
          inWatch: true,
        });
      }
      const stopped = new Promise<void>((resolve) =>
        ctx.signals.onStop(
          () =>
            daemon
              .stop()
              .catch((error: unknown) => ctx.log.error({ error: (error as Error).message }, 'unclean stop'))
              .then(resolve),
          { secondSignalExits: true },
        ),
      );
      ctx.signals.onReload(() => daemon.reload());
      try {
        await daemon.start();
      } catch (error) {
        await daemon.stop();
        await server?.close();
        throw error;
      }
      await stopped;
      await server?.close();
      return EXIT.ok;
    } finally {
      await lock.release();
    }
  },
};

/** The same lookup as at start (`--config`, $CORRAL_CONFIG, ./corral.yaml, /etc/corral/config.yaml). */
function reloadHostConfig(ctx: CommandContext): Promise<HostConfig> {
  const cwd = process.cwd();
  const file = findConfigFile(ctx.args.config as string | undefined, ctx.env, cwd);
  return loadHostConfig(file, { validators: ctx.validators, env: ctx.env, cwd });
}

function parseDebounce(value: string | boolean | undefined): number | undefined {
  if (value === undefined || typeof value === 'boolean') return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : (parseDuration(value) ?? NaN) * 1000;
  if (!Number.isFinite(ms) || ms < 0 || ms > 600_000)
    throw new ConfigError(
      `--debounce must be a number of milliseconds (or e.g. 500ms, 2s) up to 10 minutes, not "${value}"`,
    );
  return ms;
}
