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

export async function startLibvirtd(): Promise<Libvirtd> {
  // Short path: the control socket lives under it and unix socket paths are capped at 108 bytes.
  const dir = await mkdtemp('/tmp/corral-lv-');
  const script = sandboxScript();
  const stopSync = (): void => {
    spawnSync('bash', [script, 'stop', dir], { stdio: 'ignore' });
  };
  process.once('exit', stopSync);
  let uri: string;
  try {
    const r = await execa('bash', [script, 'start', dir]);
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
