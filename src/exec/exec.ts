/**
 * The one way corral runs external commands (virsh, qemu-img, genisoimage). It is passed in as a
 * dependency so tests can count or fake process spawns; every failure becomes a CommandError built
 * from execa's own fields.
 */
import { execa, ExecaError } from 'execa';
import { CommandError } from '../errors.js';

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

/** A CommandError from what execa says about the failure. */
export function commandErrorFrom(err: ExecaError, file: string, args: readonly string[]): CommandError {
  const stderr = typeof err.stderr === 'string' ? err.stderr : '';
  const why = err.timedOut
    ? `timed out after ${err.durationMs !== undefined ? Math.round(err.durationMs) : '?'} ms`
    : err.signal
      ? `killed by ${err.signal}`
      : lastLine(stderr) || err.shortMessage;
  return new CommandError(
    `${file} ${subcommand(args)} failed: ${why}`,
    { command: err.escapedCommand, exitCode: err.exitCode, signal: err.signal, timedOut: err.timedOut, stderr },
    { cause: err },
  );
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
    if (err instanceof ExecaError) throw commandErrorFrom(err, file, args);
    throw err;
  }
};
