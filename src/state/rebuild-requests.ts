import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic-write.js';

/**
 * Rebuilds an operator asked for (`POST /api/v1/profiles/<name>/rebuild`): profile → ISO time of
 * the request. Level-triggered like everything else: the planner rebuilds a profile whose newest
 * template is older than its request, so a request is satisfied by the next successful build and
 * survives a crash or a restart. Kept in the state dir, so a request reaches whichever process
 * holds the lock.
 */
export class RebuildRequests {
  readonly file: string;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(stateDir: string) {
    this.file = join(stateDir, 'rebuild-requests.json');
  }

  async read(): Promise<Record<string, string>> {
    try {
      const parsed = JSON.parse(await readFile(this.file, 'utf8')) as unknown;
      return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, string>) : {};
    } catch {
      return {};
    }
  }

  request(profile: string, at: Date): Promise<void> {
    const next = this.chain.then(async () => {
      const all = await this.read();
      all[profile] = at.toISOString();
      await writeFileAtomic(this.file, `${JSON.stringify(all, null, 2)}\n`);
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
