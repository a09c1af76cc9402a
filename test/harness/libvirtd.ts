/**
 * An isolated libvirtd per test file, started by scripts/libvirtd-sandbox.sh (docs/design.md, "Tests").
 * Use in beforeAll/afterAll; stop() kills the daemon and every guest process it started and
 * removes its dir, whatever state the tests left. If the test process exits without calling
 * stop(), an exit hook does it synchronously.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { repoRoot } from './repo-root.js';

export interface Libvirtd {
  /** Connection URI for virsh and LibvirtHypervisor. */
  uri: string;
  /** The sandbox dir (libvirtd's config, sockets, logs); removed by stop(). */
  dir: string;
  /** Stops libvirtd and starts it again in the same sandbox; running guests keep running. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export function sandboxScript(): string {
  return path.join(repoRoot(), 'scripts/libvirtd-sandbox.sh');
}

export interface LibvirtdOptions {
  /**
   * Debian's packaged qemu.conf (qemu as libvirt-qemu, DAC dynamic ownership, virtlogd), the
   * control socket open to the `libvirt` group: the host corral meets in production, where it runs
   * as the unprivileged user `corral` (see runAsCorral).
   */
  stock?: boolean;
}

/** The unprivileged user corral runs as on a stock host (made by scripts/install-deps.sh). */
export const CORRAL_USER = 'corral';

/**
 * The command line that runs `file args` as the `corral` user with its groups (libvirt) and umask,
 * as the systemd units do; fails clearly when the user is missing.
 */
export function asCorral(file: string, args: string[]): [string, string[]] {
  const id = spawnSync('id', ['-u', CORRAL_USER], { encoding: 'utf8' });
  if (id.status !== 0)
    throw new Error(`user ${CORRAL_USER} does not exist: run scripts/install-deps.sh (it creates it in group libvirt)`);
  // umask 0027 as in contrib/systemd: what corral makes must work without being world-readable.
  const inner = ['sh', '-c', 'umask 0027 && exec "$0" "$@"', file, ...args];
  return ['setpriv', ['--reuid', CORRAL_USER, '--regid', CORRAL_USER, '--init-groups', '--', ...inner]];
}

export async function startLibvirtd(opts: LibvirtdOptions = {}): Promise<Libvirtd> {
  // Short path: the control socket lives under it and unix socket paths are capped at 108 bytes.
  const dir = await mkdtemp('/tmp/corral-lv-');
  const script = sandboxScript();
  const stopSync = (): void => {
    spawnSync('bash', [script, 'stop', dir], { stdio: 'ignore' });
  };
  process.once('exit', stopSync);
  let uri: string;
  try {
    const r = await execa('bash', [script, 'start', dir, ...(opts.stock ? ['--stock'] : [])]);
    uri = r.stdout.trim();
  } catch (err) {
    process.off('exit', stopSync);
    stopSync();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    uri,
    dir,
    async restart() {
      await execa('bash', [script, 'restart', dir]);
    },
    stop() {
      stopped ??= (async () => {
        process.off('exit', stopSync);
        await execa('bash', [script, 'stop', dir]);
      })();
      return stopped;
    },
  };
}
