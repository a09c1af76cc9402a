/**
 * The seed disk of a rebuild guest: an ISO9660 image labelled `cidata` (so cloud-init images read
 * it as NoCloud) holding the provision dir plus a `corral-entry` file naming the entry script.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ProvisionSpec } from '../../sources/view.js';
import type { Exec } from '../../exec/exec.js';

export async function buildSeedIso(exec: Exec, provision: ProvisionSpec, target: string): Promise<void> {
  const extra = await mkdtemp(path.join(os.tmpdir(), 'corral-seed-'));
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    await writeFile(path.join(extra, 'corral-entry'), `${provision.entry}\n`);
    // Two pathspecs: genisoimage merges both dirs into the ISO root.
    await exec('genisoimage', ['-quiet', '-V', 'cidata', '-r', '-J', '-o', tmp, provision.dir, extra]);
    await rename(tmp, target);
  } finally {
    await rm(extra, { recursive: true, force: true });
    await rm(tmp, { force: true });
  }
}
