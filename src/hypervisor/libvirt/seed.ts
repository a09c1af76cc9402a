/**
 * Seed disks: ISO9660 images labelled `cidata`, so cloud-init images read them as NoCloud.
 * - a rebuild guest's holds the provision dir plus a `corral-entry` file naming the entry script
 *   (none for a cloud-init dir: cloud-init runs its `user-data` itself);
 * - every runner gets its own (runnerSeed): `meta-data` whose instance-id is the runner's name and
 *   local-hostname that name with dots as dashes (a new instance to cloud-init: its own hostname
 *   and fresh SSH host keys), an empty
 *   `user-data`, and a `corral/` dir (name, profile, labels, host) that other features add to.
 * Seeds may carry what only the guest should see: they are mode 0600 on the host, and their
 * content is never logged.
 */
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ProvisionSpec } from '../../sources/view.js';
import type { Exec } from '../../exec/exec.js';

export async function buildSeedIso(exec: Exec, provision: ProvisionSpec, target: string): Promise<void> {
  const extra = await mkdtemp(path.join(os.tmpdir(), 'corral-seed-'));
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    if (provision.entry !== undefined) await writeFile(path.join(extra, 'corral-entry'), `${provision.entry}\n`);
    // Two pathspecs: genisoimage merges both dirs into the ISO root.
    await exec('genisoimage', ['-quiet', '-V', 'cidata', '-r', '-J', '-o', tmp, provision.dir, extra]);
    await chmod(tmp, 0o600);
    await rename(tmp, target);
  } finally {
    await rm(extra, { recursive: true, force: true });
    await rm(tmp, { force: true });
  }
}

export interface RunnerIdentity {
  name: string;
  profile: string;
  labels: Record<string, string>;
  /** The corral host's name. */
  host: string;
  /** Further files for `corral/` (relative path → content), e.g. a CI system's registration. */
  extra?: Record<string, string>;
}

/**
 * The runner's hostname: its name with dots as dashes. A dot would make the name a domain to
 * cloud-init (`ci-runner-web.1` → host `ci-runner-web`, domain `1`), so every runner of a profile
 * would get the same hostname.
 */
export function hostnameFor(runner: string): string {
  return runner.replace(/\./g, '-');
}

/** The files of a runner's seed, relative to the ISO root. */
export function runnerSeedFiles(id: RunnerIdentity): Record<string, string> {
  const labels = Object.entries(id.labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}\n`)
    .join('');
  const files: Record<string, string> = {
    'meta-data': `instance-id: ${id.name}\nlocal-hostname: ${hostnameFor(id.name)}\n`,
    // NoCloud wants both files; runners need nothing from cloud-init beyond its per-instance defaults.
    'user-data': '#cloud-config\n{}\n',
    'corral/name': `${id.name}\n`,
    'corral/profile': `${id.profile}\n`,
    'corral/labels': labels,
    'corral/host': `${id.host}\n`,
  };
  for (const [rel, content] of Object.entries(id.extra ?? {})) {
    if (rel.split('/').some((part) => part === '..' || part === '')) throw new Error(`bad seed file name ${rel}`);
    files[`corral/${rel}`] = content;
  }
  return files;
}

export async function buildRunnerSeed(exec: Exec, id: RunnerIdentity, target: string): Promise<void> {
  const stage = await mkdtemp(path.join(os.tmpdir(), 'corral-runner-seed-'));
  const tmp = `${target}.tmp-${process.pid}`;
  try {
    for (const [rel, content] of Object.entries(runnerSeedFiles(id))) {
      await mkdir(path.dirname(path.join(stage, rel)), { recursive: true });
      await writeFile(path.join(stage, rel), content, { mode: 0o600 });
    }
    await exec('genisoimage', ['-quiet', '-V', 'cidata', '-r', '-J', '-o', tmp, stage]);
    await chmod(tmp, 0o600);
    await rename(tmp, target);
  } finally {
    await rm(stage, { recursive: true, force: true });
    await rm(tmp, { force: true });
  }
}
