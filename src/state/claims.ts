import { link, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { syncDir } from '../util/atomic-write.js';

/** A runner held by a CI job (GitLab's prepare → cleanup). */
export interface Claim {
  runner: string;
  profile: string;
  /** CI_JOB_ID of the job holding it. */
  job: string;
  claimedAt: string;
  /** The claimed guest's createdAt: a later guest reusing the runner's name is not claimed. */
  guestCreatedAt: string;
}

/**
 * A claim older than `maxJobSeconds` is stale: the job's cleanup never came (gitlab-runner was
 * killed between prepare and cleanup), so its runner is replaced. False for an unreadable claim
 * (no time): those hold no guest anyway (their guestCreatedAt matches none).
 */
export function isStaleClaim(claim: Pick<Claim, 'claimedAt'>, now: Date, maxJobSeconds: number): boolean {
  const at = Date.parse(claim.claimedAt);
  return Number.isFinite(at) && now.getTime() - at > maxJobSeconds * 1000;
}

/**
 * Claims on runners, one file per runner in the state dir: `link()` of a fully written temp file
 * onto `claims/<runner>.json` either creates the claim or fails with EEXIST, so two concurrent
 * jobs never get the same guest, and a claim is never seen half-written. Files survive restarts.
 */
export class ClaimStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'claims');
  }

  private file(runner: string): string {
    if (!/^[A-Za-z0-9_.@-]+$/.test(runner)) throw new Error(`not a runner name: ${JSON.stringify(runner)}`);
    return join(this.dir, `${runner}.json`);
  }

  /** True when this call took the runner; false when someone else holds it. */
  async tryClaim(claim: Claim): Promise<boolean> {
    const target = this.file(claim.runner);
    await mkdir(this.dir, { recursive: true });
    const tmp = join(this.dir, `.${claim.runner}.${randomBytes(4).toString('hex')}.tmp`);
    await writeFile(tmp, `${JSON.stringify(claim)}\n`, { flush: true });
    try {
      await link(tmp, target);
      await syncDir(this.dir);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw error;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async list(): Promise<Claim[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const claims: Claim[] = [];
    for (const name of names.filter((n) => n.endsWith('.json') && !n.startsWith('.'))) {
      try {
        claims.push(JSON.parse(await readFile(join(this.dir, name), 'utf8')) as Claim);
      } catch {
        // Unreadable: still a claim on that runner (never hand it out twice).
        claims.push({ runner: name.slice(0, -5), profile: '', job: '', claimedAt: '', guestCreatedAt: '' });
      }
    }
    return claims;
  }

  async runners(): Promise<Set<string>> {
    return new Set((await this.list()).map((c) => c.runner));
  }

  async forJob(job: string): Promise<Claim | undefined> {
    return (await this.list()).find((c) => c.job === job);
  }

  /** Drops the claim on `runner`; with `job`, only while that job still holds it. */
  async release(runner: string, job?: string): Promise<void> {
    if (job !== undefined) {
      const current = (await this.list()).find((c) => c.runner === runner);
      if (current && current.job !== job) return;
    }
    await rm(this.file(runner), { force: true });
  }
}
