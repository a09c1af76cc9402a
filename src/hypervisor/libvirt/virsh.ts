/**
 * virsh invocation. `batch` runs many commands in ONE process fed over stdin (docs/design.md, "Observation"):
 * virsh echoes each command and prints no separators of its own, so we interleave `echo` markers
 * whose printed form (quotes removed) never appears in the echoed command lines.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CommandError, GuestExistsError, HostError, NoSuchGuestError, TransientError } from '../../errors.js';
import type { Exec } from '../../exec/exec.js';

export interface BatchResult {
  out: string[];
  /** Everything the commands wrote to stderr (virsh does not say which command failed). */
  stderr: string;
}

export interface Virsh {
  run(args: readonly string[], input?: string): Promise<string>;
  /** One process for all commands; each result is that command's stdout ('' when it failed). */
  batch(commands: readonly string[]): Promise<BatchResult>;
  /** `virsh define` of an XML document (persistent guest). */
  define(xml: string): Promise<void>;
}

/** Quotes an argument for virsh's own command-line parser. */
export function virshQuote(arg: string): string {
  if (/['\\\n]/.test(arg)) throw new Error(`refusing to pass ${JSON.stringify(arg)} to virsh`);
  return `'${arg}'`;
}

/** A wedged libvirtd must surface as an error, not hang a pass forever. */
const TIMEOUT_MS = 120_000;

export function createVirsh(uri: string, exec: Exec, timeoutMs = TIMEOUT_MS): Virsh {
  const base = ['-q', '-c', uri];
  return {
    async run(args, input) {
      const r = await exec(
        'virsh',
        [...base, ...args],
        input === undefined ? { timeoutMs } : { input, timeoutMs },
      ).catch((err: unknown) => {
        throw lostConnection(err) ?? err;
      });
      return r.stdout;
    },
    async batch(commands) {
      if (commands.length === 0) return { out: [], stderr: '' };
      const nonce = randomBytes(6).toString('hex');
      const script =
        commands.map((c, i) => `echo @@corral-${nonce}''@@${i}@@\n${c}\n`).join('') +
        `echo @@corral-${nonce}''@@end@@\n`;
      const r = await exec('virsh', base, { input: script, timeoutMs }).catch((err: unknown) => {
        throw lostConnection(err) ?? err;
      });
      return { out: splitBatch(r.stdout, nonce, commands.length), stderr: r.stderr };
    },
    async define(xml) {
      // Through a file: Node gives children a socket as stdin, and virsh cannot open /dev/stdin on it.
      const file = path.join(os.tmpdir(), `corral-define-${randomBytes(6).toString('hex')}.xml`);
      await writeFile(file, xml);
      try {
        await exec('virsh', [...base, 'define', file], { timeoutMs }).catch((err: unknown) => {
          throw lostConnection(err) ?? err;
        });
      } finally {
        await rm(file, { force: true });
      }
    },
  };
}

export function splitBatch(stdout: string, nonce: string, count: number): string[] {
  const out: string[] = new Array<string>(count).fill('');
  const marker = new RegExp(`@@corral-${nonce}@@(\\d+|end)@@`, 'g');
  const parts = stdout.split(marker);
  // split() with one capture group yields [before, id, chunk, id, chunk, …].
  for (let i = 1; i + 1 < parts.length; i += 2) {
    const id = parts[i];
    if (id === undefined || id === 'end') continue;
    const chunk = parts[i + 1] ?? '';
    const idx = Number(id);
    if (idx < count) out[idx] = stripPrompts(chunk);
  }
  if (!stdout.includes(`@@corral-${nonce}@@end@@`)) {
    throw new CommandError('virsh batch ended early', { command: 'virsh (batch)', stderr: stdout.slice(-2000) });
  }
  return out;
}

/** Drops virsh's echoed `virsh # <command>` lines; real output never starts with that. */
function stripPrompts(chunk: string): string {
  return chunk
    .split('\n')
    .filter((line) => !line.startsWith('virsh # ') && line !== 'virsh #')
    .join('\n')
    .trim();
}

const NO_DOMAIN = /failed to get domain|Domain not found|no domain with matching/i;
const EXISTS = /already exists|already defined/i;
/** What virsh says when libvirtd is not (or no longer) there: restarting, or not started yet. */
const CONNECTION =
  /failed to connect|end of file|client socket is closed|cannot recv data|connection reset|disconnected from/i;

export function isNoDomain(err: unknown): boolean {
  return err instanceof NoSuchGuestError || (err instanceof CommandError && NO_DOMAIN.test(err.stderr));
}

/** libvirtd restarting is transient: the same command works again in a moment. */
export function lostConnection(err: unknown): TransientError | undefined {
  if (!(err instanceof CommandError) || !CONNECTION.test(err.stderr)) return undefined;
  return new TransientError(`libvirtd is not answering: ${err.message}`, { cause: err });
}

/**
 * The shared error classes for what a guest-level command's failure means, so the libvirt backend
 * throws what the memory backend throws for the same condition.
 */
export function guestError(guest: string, err: unknown): unknown {
  if (!(err instanceof CommandError)) return err;
  if (NO_DOMAIN.test(err.stderr)) return new NoSuchGuestError(guest, { cause: err });
  if (EXISTS.test(err.stderr)) return new GuestExistsError(guest, { cause: err });
  return err;
}

/**
 * `virsh start`. libvirt refusing to start a guest (virtlogd not running, a disk qemu may not
 * open, a missing bridge) is a problem of the host, never of the guest: a HostError.
 */
export async function startGuest(virsh: Virsh, name: string): Promise<void> {
  try {
    await virsh.run(['start', name]);
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
    const detail = err.stderr.trim().split('\n').filter(Boolean).join(' ') || err.message;
    throw new HostError(`libvirt could not start ${name}: ${detail}`, { cause: err });
  }
}
