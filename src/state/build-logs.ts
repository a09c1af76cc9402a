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
    for (const name of mine.slice(0, Math.max(0, mine.length - this.keep)))
      await rm(join(this.dir, name), { force: true });
  }
}
