import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Runners are destroyed with their disks when they are replaced, scaled down or shut off; their
 * console output stays here (the last `keep` per profile), readable by the corral user, so a job
 * that went wrong on a runner can still be looked into.
 */
export class RunnerLogs {
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly keep = 20,
  ) {
    this.dir = join(stateDir, 'runner-logs');
  }

  /** Saves a runner's console output as `<runner>.<UTC time>.console.log`; returns the file. */
  async save(profile: string, runner: string, text: string, now: Date): Promise<string> {
    const dir = join(this.dir, profile);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const stamp = now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    const file = join(dir, `${runner}.${stamp}.console.log`);
    await writeFile(file, text, { mode: 0o600 });
    // Oldest first by the time in the name, whatever the runner's index.
    const byTime = (await readdir(dir))
      .filter((n) => n.endsWith('.console.log'))
      .sort((a, b) => stampOf(a).localeCompare(stampOf(b)) || a.localeCompare(b));
    for (const name of byTime.slice(0, Math.max(0, byTime.length - this.keep)))
      await rm(join(dir, name), { force: true });
    return file;
  }
}

function stampOf(name: string): string {
  return /\.(\d{8}T\d{6}Z)\.console\.log$/.exec(name)?.[1] ?? '';
}
