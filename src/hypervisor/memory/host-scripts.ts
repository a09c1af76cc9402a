/**
 * The memory backend's stand-in for a guest agent, for tests and demos only and only when asked
 * for (docs/ci.md, "The memory backend"): a memory guest has no machine to run anything in, so
 * its script runs as a host process in the runner's own scratch dir, as the invoking user, with a
 * minimal environment. That keeps every semantic `corral gitlab run` relies on real — streamed
 * stdout and stderr, the `#!` line, the exit status, a process group that a cancelled job kills —
 * where an interpreter of canned answers would test nothing. It is no isolation: never enable it
 * for jobs you would not run on the host itself.
 */
import { constants } from 'node:os';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import type { ScriptOptions } from '../hypervisor.js';

export const DEFAULT_KILL_GRACE_MS = 5000;

export class HostScripts {
  constructor(private readonly dir: string) {}

  /** The runner's scratch dir: HOME and working dir of its scripts, removed with the runner. */
  guestDir(runner: string): string {
    return join(this.dir, runner);
  }

  async remove(runner: string): Promise<void> {
    await rm(this.guestDir(runner), { recursive: true, force: true });
  }

  async run(runner: string, script: string, onOutput: (chunk: Buffer) => void, opts: ScriptOptions = {}) {
    const home = this.guestDir(runner);
    await mkdir(home, { recursive: true, mode: 0o700 });
    const file = join(home, `.corral-job-${randomBytes(6).toString('hex')}.sh`);
    await writeFile(file, script, { mode: 0o700 });
    try {
      // Its own process group (detached), so a cancel reaches whatever the script started.
      const child = execa(script.startsWith('#!') ? file : '/bin/sh', script.startsWith('#!') ? [] : [file], {
        cwd: home,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, CORRAL_MEMORY_GUEST: runner },
        extendEnv: false,
        detached: true,
        stdin: 'ignore',
        all: true,
        buffer: false,
        reject: false,
        cleanup: true,
      });
      child.all?.on('data', (chunk: Buffer) => onOutput(chunk));
      const group = (signal: NodeJS.Signals) => {
        try {
          if (child.pid) process.kill(-child.pid, signal);
        } catch {
          // The group is gone already.
        }
      };
      let killTimer: NodeJS.Timeout | undefined;
      const stop = () => {
        group('SIGTERM');
        killTimer = setTimeout(() => group('SIGKILL'), opts.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
      };
      if (opts.signal?.aborted) stop();
      else opts.signal?.addEventListener('abort', stop, { once: true });
      const result = await child;
      clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', stop);
      if (typeof result.exitCode === 'number') return result.exitCode;
      const signal = result.signal ? constants.signals[result.signal] : undefined;
      return 128 + (signal ?? 0);
    } finally {
      await rm(file, { force: true });
    }
  }
}
