/**
 * A memory runner's seed files (its `corral/` dir: registration material, secrets). They are
 * never part of the backend's JSON state file: with a dir they are files on disk, 0600 in 0700
 * dirs, one dir per runner, removed with the runner; without one (in-process tests) they live in
 * this object only.
 */
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';

export class SeedFiles {
  private readonly inMemory = new Map<string, Record<string, string>>();

  constructor(readonly dir?: string) {}

  runnerDir(runner: string): string | undefined {
    return this.dir ? join(this.dir, runner) : undefined;
  }

  async write(runner: string, files: Record<string, string>): Promise<void> {
    for (const name of Object.keys(files))
      if (name === '' || name.startsWith('/') || name.split(/[\\/]/).includes('..'))
        throw new Error(`seed file name ${JSON.stringify(name)} leaves the corral/ dir`);
    const root = this.runnerDir(runner);
    if (!root) return void this.inMemory.set(runner, { ...files });
    await rm(root, { recursive: true, force: true });
    for (const [name, content] of Object.entries(files)) {
      const file = join(root, 'corral', name);
      await mkdir(dirname(file), { recursive: true, mode: 0o700 });
      await writeFile(file, content, { mode: 0o600 });
    }
    await mkdir(join(root, 'corral'), { recursive: true, mode: 0o700 });
  }

  /** The runner's seed files (name under corral/ → content), undefined when it has none. */
  async read(runner: string): Promise<Record<string, string> | undefined> {
    const root = this.runnerDir(runner);
    if (!root) return this.inMemory.get(runner);
    const corral = join(root, 'corral');
    let entries;
    try {
      entries = await readdir(corral, { recursive: true, withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    const files: Record<string, string> = {};
    for (const e of entries.filter((x) => x.isFile())) {
      const full = join(e.parentPath, e.name);
      files[relative(corral, full).split(sep).join('/')] = await readFile(full, 'utf8');
    }
    return files;
  }

  async remove(runner: string): Promise<void> {
    this.inMemory.delete(runner);
    const root = this.runnerDir(runner);
    if (root) await rm(root, { recursive: true, force: true });
  }
}
