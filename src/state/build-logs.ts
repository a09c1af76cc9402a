import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Failed builds are destroyed with their disks; their console log stays here, so "why" has an answer. */
export class FailedBuildLogs {
  readonly dir: string;

  constructor(
    stateDir: string,
    /** Logs kept per profile; older ones are removed. */
    private readonly keep = 10,
  ) {
    this.dir = join(stateDir, 'failed-builds');
  }

  /** Saves the console output of a failed rebuild guest; returns the file written. */
  async save(profile: string, guest: string, text: string): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const file = join(this.dir, `${guest}.console.log`);
    await writeFile(file, text);
    await this.prune(profile);
    return file;
  }

  private async prune(profile: string): Promise<void> {
    // Names sort by generation (a UTC timestamp), so the oldest come first.
    const mine = (await readdir(this.dir)).filter((n) => n.includes(`-rebuild-${profile}@`)).sort();
    for (const name of mine.slice(0, Math.max(0, mine.length - this.keep))) await rm(join(this.dir, name), { force: true });
  }
}

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
    const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    const file = join(dir, `${runner}.${stamp}.console.log`);
    await writeFile(file, text, { mode: 0o600 });
    // Oldest first by the time in the name, whatever the runner's index.
    const byTime = (await readdir(dir))
      .filter((n) => n.endsWith('.console.log'))
      .sort((a, b) => stampOf(a).localeCompare(stampOf(b)) || a.localeCompare(b));
    for (const name of byTime.slice(0, Math.max(0, byTime.length - this.keep))) await rm(join(dir, name), { force: true });
    return file;
  }
}

function stampOf(name: string): string {
  return /\.(\d{8}T\d{6}Z)\.console\.log$/.exec(name)?.[1] ?? '';
}
