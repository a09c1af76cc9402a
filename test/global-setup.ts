/**
 * Runs once before any test file: CLI tests run bin/corral.js, which runs dist/, so build it; and the
 * built-in `tiny` profile references artefacts made by scripts/build-tiny.sh (idempotent, but only
 * needed when they are missing).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './builders/profile-dir.js';

export function setup(): void {
  execFileSync('npm', ['run', 'build', '--silent'], { cwd: REPO, stdio: 'inherit' });
  const tiny = ['base.qcow2', 'vmlinuz', 'initrd.img'].map((f) => join(REPO, 'profiles/tiny/build', f));
  if (!tiny.every((f) => existsSync(f))) {
    execFileSync('bash', [join(REPO, 'scripts/build-tiny.sh')], { cwd: REPO, stdio: 'inherit' });
  }
}
