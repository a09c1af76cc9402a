import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import type { Level } from 'pino';
import { CommandError, ConfigError, LockBusyError, TransientError, formatProblem, type Problem } from '../errors.js';
import { findConfigFile, loadHostConfig, type HostConfig } from '../config/host-config.js';
import { oneLine } from '../util/escape.js';
import { namePaths } from './config-paths.js';
import { createValidators } from '../config/schema.js';
import { createLogger } from './logger.js';
import { EXIT, type Command, type CommandContext, type Output } from './command.js';
import { commands } from './commands/index.js';

const GLOBAL_OPTIONS = {
  config: { type: 'string' },
  json: { type: 'boolean' },
  'log-level': { type: 'string' },
  hypervisor: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
} as const;

const GLOBAL_HELP = `Global options:
  --config FILE        host config (default: $CORRAL_CONFIG, ./corral.yaml, /etc/corral/config.yaml)
  --json               machine-readable output on stdout
  --log-level LEVEL    trace|debug|info|warn|error|silent (default: info)
  --hypervisor KIND    libvirt|memory (overrides the config's "hypervisor")
  -h, --help           show help`;

export interface MainOptions {
  io?: Output;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stderrIsTty?: boolean;
}

export async function main(argv: string[], opts: MainOptions = {}): Promise<number> {
  const io = opts.io ?? {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    write: (chunk) => process.stdout.write(chunk),
  };
  const env = opts.env ?? process.env;
  const at = commandIndex(argv);
  const name = at === -1 ? undefined : argv[at];
  const all = commands();
  // Before the options parse, `--json` anywhere asks for the JSON error object too.
  const usage = (message: string, prefix = `corral ${name}`): number => {
    io.err(`${prefix}: ${oneLine(message)}\n`);
    if (argv.includes('--json'))
      io.out(`${JSON.stringify({ ok: false, error: { kind: 'usage', message } }, null, 2)}\n`);
    return EXIT.error;
  };
  if (!name) {
    if (argv.includes('--version')) return (io.out(`${version()}\n`), EXIT.ok);
    if (argv.includes('--help') || argv.includes('-h')) return (io.out(topHelp(all)), EXIT.ok);
    io.err(topHelp(all));
    return argv.includes('--json') ? usage('no command given; run "corral --help" for the list', 'corral') : EXIT.error;
  }
  const command = all.find((c) => c.name === name);
  if (!command) return usage(`unknown command "${name}"; run "corral --help" for the list`, 'corral');
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv.filter((_, i) => i !== at),
      options: { ...GLOBAL_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    // node's messages run on with advice about `--`; the first sentence is the useful part.
    const message = (error as Error).message.split(/(?<=\.) /)[0]?.replace(/\.$/, '');
    return usage(`${message}; see "corral ${name} --help"`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (parsed.positionals.length > (command.positionals ?? 0) && !values.help)
    return usage(`unexpected argument "${parsed.positionals[command.positionals ?? 0]}"; see "corral ${name} --help"`);
  if (parsed.positionals.length < (command.minPositionals ?? 0) && !values.help)
    return usage(`missing arguments; usage: ${command.usage}`);
  if (values.help) {
    io.out(commandHelp(command));
    return EXIT.ok;
  }
  const json = values.json === true;
  // `--config ""` or `--config=` (an unset variable in a unit file) must not fall back to another config.
  if (values.config === '') return usage('--config needs a file name (it was empty)');
  const level = (values['log-level'] as string | undefined) ?? env.CORRAL_LOG_LEVEL ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level))
    return usage('--log-level must be one of trace, debug, info, warn, error, silent');
  const log = createLogger(level as Level, { tty: opts.stderrIsTty ?? Boolean(process.stderr.isTTY) });
  let loaded: HostConfig | undefined;
  try {
    const cwd = opts.cwd ?? process.cwd();
    const validators = createValidators();
    const config = await loadHostConfig(findConfigFile(values.config as string | undefined, env, cwd), {
      validators,
      env,
      cwd,
    });
    loaded = config;
    const hypervisor = values.hypervisor;
    if (hypervisor !== undefined) {
      if (hypervisor !== 'libvirt' && hypervisor !== 'memory')
        throw new ConfigError(`--hypervisor must be "libvirt" or "memory", not "${String(hypervisor)}"`);
      config.hypervisor = hypervisor;
    }
    const ctx: CommandContext = {
      args: values,
      positionals: parsed.positionals,
      json,
      config,
      validators,
      log,
      io,
      env,
      now: () => new Date(),
      signals: processSignals(),
    };
    return await command.run(ctx);
  } catch (error) {
    const failure = describeFailure(namePaths(error, loaded), name, level === 'debug' || level === 'trace');
    io.err(failure.text);
    if (json) io.out(`${JSON.stringify({ ok: false, error: failure.error }, null, 2)}\n`);
    return failure.exitCode;
  }
}

/** Index of the command name: the first argument that is neither an option nor a global option's value. */
function commandIndex(argv: string[]): number {
  const takesValue = new Set(
    Object.entries(GLOBAL_OPTIONS)
      .filter(([, o]) => o.type === 'string')
      .map(([k]) => `--${k}`),
  );
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (takesValue.has(arg)) i++;
    else if (!arg.startsWith('-')) return i;
  }
  return -1;
}

interface Failure {
  text: string;
  exitCode: number;
  /** What `--json` prints on stdout. */
  error: { kind: string; message: string; problems?: Problem[] };
}

/** The one place where failures become messages and exit codes. Every line is one line: names are escaped. */
function describeFailure(error: unknown, name: string, verbose: boolean): Failure {
  const head = (message: string) => `corral ${name}: ${oneLine(message)}\n`;
  if (error instanceof ConfigError) {
    return {
      text: `${head(error.message)}${error.problems.map((p) => `  ${formatProblem(p)}\n`).join('')}`,
      exitCode: EXIT.error,
      error: { kind: 'config', message: error.message, problems: error.problems },
    };
  }
  if (error instanceof LockBusyError) {
    return { text: head(error.message), exitCode: EXIT.busy, error: { kind: 'busy', message: error.message } };
  }
  if (error instanceof CommandError) {
    const stderr = error.stderr.trim();
    return {
      text: `${head(error.message)}  command: ${oneLine(error.command)}\n  exit code: ${error.exitCode ?? 'none'}\n${stderr ? `  stderr: ${stderr.split('\n').map(oneLine).join('\n          ')}\n` : ''}`,
      exitCode: EXIT.error,
      error: { kind: 'command', message: error.message },
    };
  }
  if (error instanceof TransientError) {
    return {
      text: head(`${error.message} (temporary; try again)`),
      exitCode: EXIT.error,
      error: { kind: 'transient', message: error.message },
    };
  }
  const err = error as Error;
  const message = err?.message ?? String(error);
  return {
    text: `${head(`internal error: ${message}`)}${verbose && err?.stack ? `${err.stack}\n` : '  (run with --log-level debug for details)\n'}`,
    exitCode: EXIT.error,
    error: { kind: 'internal', message },
  };
}

function processSignals(): CommandContext['signals'] {
  return {
    onStop: (handler, opts = {}) => {
      let stops = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        if (++stops === 1 || !opts.secondSignalExits) return handler();
        // The first stop waits for running actions, a registry transfer or a stuck pass; a second
        // means "now". What is left half-done is what a crash leaves, and the next run heals it
        // (docs/operating.md, "Signals").
        process.stderr.write(`corral: ${signal} again: exiting now, without waiting for running actions\n`);
        process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
    },
    onReload: (handler) => {
      process.on('SIGHUP', handler);
    },
  };
}

function topHelp(all: Command[]): string {
  const width = Math.max(...all.map((c) => c.name.length));
  return `corral — declarative reconciler for CI virtual machines

Usage: corral <command> [options]

Commands:
${all.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

${GLOBAL_HELP}

Run "corral <command> --help" for a command's options.
`;
}

function commandHelp(command: Command): string {
  return `Usage: ${command.usage}

${command.summary}
${command.optionsHelp ? `\nOptions:\n${command.optionsHelp}\n` : ''}
${GLOBAL_HELP}
`;
}

function version(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}
