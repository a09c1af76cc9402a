/**
 * The built-in `tiny` profile as a CompiledProfile, built by hand (not by the compiler) so backend
 * tests depend only on the view types. ensureTinyBuilt() runs scripts/build-tiny.sh, a quick no-op
 * when profiles/tiny/build is up to date, so tests work from a clean clone after install-deps.
 */
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { sha256File } from '../../src/util/hash.js';
import { BaseCache } from '../../src/images/base-cache.js';
import { execaExec } from '../../src/exec/exec.js';
import type { CompiledProfile } from '../../src/sources/view.js';
import { repoRoot } from './repo-root.js';

export const TINY_DIR = path.join(repoRoot(), 'profiles/tiny');

export async function ensureTinyBuilt(): Promise<void> {
  await execa('bash', [path.join(repoRoot(), 'scripts/build-tiny.sh')]);
}

async function hashDir(dir: string): Promise<string> {
  const h = createHash('sha256');
  for (const name of (await readdir(dir)).sort()) h.update(`${name}\0${await sha256File(path.join(dir, name))}\n`);
  return h.digest('hex');
}

export interface TinyOptions {
  /** A provision dir to use instead of profiles/tiny/provision (e.g. one whose script fails). */
  provisionDir?: string;
}

export async function tinyProfile(opts: TinyOptions = {}): Promise<CompiledProfile> {
  const build = path.join(TINY_DIR, 'build');
  const provisionDir = opts.provisionDir ?? path.join(TINY_DIR, 'provision');
  const baseVersion = `sha256:${await sha256File(path.join(build, 'base.qcow2'))}`;
  const inputsHash = `sha256:${createHash('sha256')
    .update(`${baseVersion}\n${await hashDir(provisionDir)}`)
    .digest('hex')}`;
  return {
    name: 'tiny',
    source: 'builtin',
    dir: TINY_DIR,
    file: path.join(TINY_DIR, 'profile.yaml'),
    runners: 2,
    base: { kind: 'file', file: path.join(build, 'base.qcow2') },
    baseVersion,
    guest: {
      cpus: 1,
      memoryMiB: 128,
      kernel: path.join(build, 'vmlinuz'),
      initrd: path.join(build, 'initrd.img'),
      cmdline: 'console=ttyS0 quiet',
    },
    provision: { dir: provisionDir, entry: 'provision.sh', timeoutSeconds: 120 },
    rebuild: {},
    labels: {},
    inputs: [],
    inputsHash,
  };
}

/** The profile's base in the cache under imagesDir (as a pass fetches it before startBuild). */
export async function cachedBase(profile: CompiledProfile, imagesDir: string): Promise<string> {
  const cache = new BaseCache({ imagesDir, run: execaExec, clock: () => new Date() });
  return cache.ensure(profile.base, profile.baseVersion, profile.dir);
}
