/**
 * The one way corral runs external commands (virsh, qemu-img, genisoimage). It is passed in as a
 * dependency so tests can count or fake process spawns; every failure becomes a CommandError.
 */
import { execa, ExecaError } from 'execa';
import { CommandError } from '../../errors.js';

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin, then stdin is closed. */
  input?: string;
  timeoutMs?: number;
}

export type Exec = (file: string, args: readonly string[], opts?: ExecOptions) => Promise<ExecResult>;

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}

/** The word that says what was asked (`define`, `create`), skipping options and their values. */
function subcommand(args: readonly string[]): string {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '-c' || arg === '-f' || arg === '-o' || arg === '-F') i++;
    else if (!arg.startsWith('-')) return arg;
  }
  return '(commands on stdin)';
}

export function commandLine(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export const execaExec: Exec = async (file, args, opts = {}) => {
  try {
    const r = await execa(file, [...args], {
      input: opts.input ?? '',
      timeout: opts.timeoutMs,
      stripFinalNewline: false,
      env: { LC_ALL: 'C' },
    });
    return { stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const cmd = commandLine(file, args);
    if (err instanceof ExecaError) {
      const stderr = typeof err.stderr === 'string' ? err.stderr : '';
      const why = err.timedOut ? 'timed out' : lastLine(stderr) || err.shortMessage;
      throw new CommandError(`${file} ${subcommand(args)} failed: ${why}`, cmd, err.exitCode, stderr, { cause: err });
    }
    throw new CommandError(`${file} failed: ${String(err)}`, cmd, undefined, '', { cause: err });
  }
};
