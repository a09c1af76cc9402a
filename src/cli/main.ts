import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import type { Level } from 'pino';
import { CommandError, ConfigError, LockBusyError, TransientError, formatProblem } from '../errors.js';
import { findConfigFile, loadHostConfig } from '../config/host-config.js';
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
  const io = opts.io ?? { out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t) };
  const env = opts.env ?? process.env;
  const at = commandIndex(argv);
  const name = at === -1 ? undefined : argv[at];
  const all = commands();
  if (!name) {
    if (argv.includes('--version')) return (io.out(`${version()}\n`), EXIT.ok);
    io[argv.includes('--help') || argv.includes('-h') ? 'out' : 'err'](topHelp(all));
    return argv.includes('--help') || argv.includes('-h') ? EXIT.ok : EXIT.error;
  }
  const command = all.find((c) => c.name === name);
  if (!command) {
    io.err(`corral: unknown command "${name}"; run "corral --help" for the list\n`);
    return EXIT.error;
  }
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
    io.err(`corral ${name}: ${message}; see "corral ${name} --help"\n`);
    return EXIT.error;
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (parsed.positionals.length > 0 && !values.help) {
    io.err(`corral ${name}: unexpected argument "${parsed.positionals[0]}"; see "corral ${name} --help"\n`);
    return EXIT.error;
  }
  if (values.help) {
    io.out(commandHelp(command));
    return EXIT.ok;
  }
  const level = (values['log-level'] as string | undefined) ?? env.CORRAL_LOG_LEVEL ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) {
    io.err(`corral ${name}: --log-level must be one of trace, debug, info, warn, error, silent\n`);
    return EXIT.error;
  }
  const log = createLogger(level as Level, { tty: opts.stderrIsTty ?? Boolean(process.stderr.isTTY) });
  try {
    const cwd = opts.cwd ?? process.cwd();
    const validators = createValidators();
    const config = await loadHostConfig(findConfigFile(values.config as string | undefined, env, cwd), {
      validators,
      env,
      cwd,
    });
    const hypervisor = values.hypervisor;
    if (hypervisor !== undefined) {
      if (hypervisor !== 'libvirt' && hypervisor !== 'memory')
        throw new ConfigError(`--hypervisor must be "libvirt" or "memory", not "${String(hypervisor)}"`);
      config.hypervisor = hypervisor;
    }
    const ctx: CommandContext = {
      args: values,
      positionals: parsed.positionals,
      json: values.json === true,
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
    return report(error, name, io, level === 'debug' || level === 'trace');
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

/** The one place where failures become messages and exit codes. */
function report(error: unknown, name: string, io: Output, verbose: boolean): number {
  if (error instanceof ConfigError) {
    io.err(`corral ${name}: ${error.message}\n${error.problems.map((p) => `  ${formatProblem(p)}\n`).join('')}`);
    return EXIT.error;
  }
  if (error instanceof LockBusyError) {
    io.err(`corral ${name}: ${error.message}\n`);
    return EXIT.busy;
  }
  if (error instanceof CommandError) {
    const stderr = error.stderr.trim();
    io.err(
      `corral ${name}: ${error.message}\n  command: ${error.command}\n  exit code: ${error.exitCode ?? 'none'}\n${stderr ? `  stderr: ${stderr.split('\n').join('\n          ')}\n` : ''}`,
    );
    return EXIT.error;
  }
  if (error instanceof TransientError) {
    io.err(`corral ${name}: ${error.message} (temporary; try again)\n`);
    return EXIT.error;
  }
  const err = error as Error;
  io.err(
    `corral ${name}: internal error: ${err?.message ?? String(error)}\n${verbose && err?.stack ? `${err.stack}\n` : '  (run with --log-level debug for details)\n'}`,
  );
  return EXIT.error;
}

function processSignals(): CommandContext['signals'] {
  return {
    onStop: (handler) => {
      process.on('SIGTERM', handler);
      process.on('SIGINT', handler);
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
