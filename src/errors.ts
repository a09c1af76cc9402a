/**
 * The three kinds of failure corral distinguishes. Only src/cli maps them to exit codes.
 * - ConfigError: the operator's input is wrong; retrying will not help. Carries every problem found.
 * - CommandError: an external command (virsh, qemu-img, …) failed; keeps command, exit code and stderr.
 * - TransientError: worth retrying later with back-off (a busy lock, a hypervisor hiccup).
 *   HostError is the kind that says the host is at fault (a permission, a missing daemon): it is
 *   reported with its message and backed off, and never judged as a guest's failure.
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

export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
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

/** Raised when another process holds the state-dir lock; cron callers get a distinct exit code. */
export class LockBusyError extends TransientError {
  constructor(
    message: string,
    readonly holder: { pid: number; command: string },
  ) {
    super(message);
  }
}
