/**
 * A runner's own seed: a small ISO9660 disk labelled `cidata` holding `corral/<file>` (CI
 * registration material such as `github-jitconfig`) plus NoCloud `meta-data` naming the runner,
 * so cloud-init images see a new instance. It holds secrets: the ISO is 0600 on the host and is
 * deleted with the guest (it is one of its disks).
 */
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Exec } from '../../exec/exec.js';

export const RUNNER_SEED_SERIAL = 'corral-runner-seed';

export async function buildRunnerSeedIso(
  exec: Exec,
  runner: string,
  files: Record<string, string>,
  target: string,
): Promise<void> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'corral-runner-seed-'));
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    await mkdir(path.join(root, 'corral'), { mode: 0o700 });
    for (const [name, content] of Object.entries(files)) {
      const file = path.join(root, 'corral', name);
      if (!file.startsWith(path.join(root, 'corral') + path.sep))
        throw new Error(`seed file name leaves corral/: ${name}`);
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, content, { mode: 0o600 });
    }
    await writeFile(path.join(root, 'meta-data'), `instance-id: ${runner}\nlocal-hostname: ${runner}\n`);
    await writeFile(path.join(root, 'user-data'), '#cloud-config\n{}\n');
    await writeFile(tmp, '', { mode: 0o600 });
    await exec('genisoimage', ['-quiet', '-V', 'cidata', '-r', '-J', '-o', tmp, root]);
    await chmod(tmp, 0o600);
    await rename(tmp, target);
  } finally {
    await rm(root, { recursive: true, force: true });
    await rm(tmp, { force: true });
  }
}
