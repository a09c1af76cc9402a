/**
 * The kinds of failure corral distinguishes, each with its policy (docs/design.md, "Errors").
 * Only src/cli maps them to exit codes; the pass and `watch` decide by `errorKind()` what to retry.
 * - ConfigError: the operator's input is wrong; terminal until the sources (or the host config) change.
 * - CommandError: an external command (virsh, qemu-img, …) failed; keeps execa's own fields. A timeout
 *   or a kill by signal is transient, a plain non-zero exit is not.
 * - TransientError: worth retrying soon with back-off (libvirtd restarting, a lock race, a guest that
 *   appeared or vanished between observation and action). Both backends throw the same subclass for
 *   the same condition. HostError is the kind that says the host is at fault (a permission, a missing
 *   daemon): it is reported with its message and backed off, and never judged as a guest's failure.
 */
import { oneLine } from './util/escape.js';

export interface Problem {
  /** File the problem is in (absolute or as given), or '' when not tied to a file. */
  file: string;
  /** JSON pointer into the document (`/runners`) or a `line:col` position for syntax errors. */
  where?: string;
  message: string;
  severity: 'error' | 'warning';
}

/** Always one line: names from the filesystem or YAML keys cannot split it or inject text. */
export function formatProblem(p: Problem): string {
  const message = oneLine(p.message);
  if (!p.file) return message;
  if (!p.where) return `${oneLine(p.file)}: ${message}`;
  const sep = p.where.startsWith('/') || p.where === '' ? '#' : ':';
  return `${oneLine(p.file)}${sep}${oneLine(p.where)}: ${message}`;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    message: string,
    readonly problems: Problem[] = [],
  ) {
    super(message);
  }
}

/** What corral keeps of a failed command: execa's own fields, not a re-assembled command line. */
export interface CommandFailure {
  /** The command line as execa escaped it (`escapedCommand`). */
  command: string;
  exitCode?: number | undefined;
  /** The signal that killed it (`SIGTERM`, …). */
  signal?: string | undefined;
  timedOut?: boolean;
  stderr?: string;
}

export class CommandError extends Error {
  override readonly name = 'CommandError';
  readonly command: string;
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly timedOut: boolean;
  readonly stderr: string;
  constructor(message: string, failure: CommandFailure, options?: { cause?: unknown }) {
    super(message, options);
    this.command = failure.command;
    this.exitCode = failure.exitCode;
    this.signal = failure.signal;
    this.timedOut = failure.timedOut ?? false;
    this.stderr = failure.stderr ?? '';
  }
}

export class TransientError extends Error {
  override readonly name: string = 'TransientError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The host cannot do what corral needs (a file it may not read, libvirt failing to start a guest). */
export class HostError extends TransientError {
  override readonly name = 'HostError';
}

/** A guest that an action needs is not there (it went away since the pass observed it). */
export class NoSuchGuestError extends TransientError {
  constructor(
    readonly guest: string,
    options?: { cause?: unknown },
  ) {
    super(`no guest named ${guest}`, options);
  }
}

/** A guest that an action would create is already there (another pass or a person made it meanwhile). */
export class GuestExistsError extends TransientError {
  constructor(
    readonly guest: string,
    options?: { cause?: unknown },
  ) {
    super(`guest ${guest} already exists`, options);
  }
}

export type ErrorKind = 'config' | 'transient' | 'command' | 'internal';

/** The policy an error carries: config errors wait for an edit, transient ones are retried with back-off. */
export function errorKind(error: unknown): ErrorKind {
  if (error instanceof ConfigError) return 'config';
  if (error instanceof TransientError) return 'transient';
  if (error instanceof CommandError) return error.timedOut || error.signal !== undefined ? 'transient' : 'command';
  return 'internal';
}

/** Raised when another process holds the state-dir lock; cron callers get a distinct exit code. */
export class LockBusyError extends TransientError {
  constructor(
    message: string,
    readonly holder: { pid: number; command: string },
  ) {
    super(message);
  }
}
