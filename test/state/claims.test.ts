import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ClaimStore, type Claim } from '../../src/state/claims.js';

let dir: string;
beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'corral-claims-'))));
afterEach(async () => rm(dir, { recursive: true, force: true }));

const claim = (job: string, runner = 'ci-runner-pool.1'): Claim => ({
  runner,
  profile: 'pool',
  job,
  claimedAt: '2026-11-27T15:00:00.000Z',
  guestCreatedAt: '2026-11-27T14:00:00.000Z',
});

describe('ClaimStore', () => {
  it('gives a runner to exactly one of many concurrent claimers, and leaves no temp files', async () => {
    const store = new ClaimStore(dir);
    const won = await Promise.all(Array.from({ length: 20 }, (_, i) => store.tryClaim(claim(String(i)))));
    expect(won.filter(Boolean)).toHaveLength(1);
    expect(await readdir(store.dir)).toEqual(['ci-runner-pool.1.json']);
  });

  it('holds across processes: a claim made by another process is seen and respected', async () => {
    const script = `
      import { ClaimStore } from ${JSON.stringify(join(import.meta.dirname, '../../dist/state/claims.js'))};
      const ok = await new ClaimStore(process.argv[1]).tryClaim({ runner: 'ci-runner-pool.1', profile: 'pool', job: 'other', claimedAt: '', guestCreatedAt: '' });
      process.stdout.write(String(ok));`;
    const r = await execa('node', ['--input-type=module', '-e', script, dir]);
    expect(r.stdout).toBe('true');
    const store = new ClaimStore(dir);
    expect(await store.tryClaim(claim('mine'))).toBe(false);
    expect((await store.forJob('other'))?.runner).toBe('ci-runner-pool.1');
    await store.release('ci-runner-pool.1');
    expect(await store.tryClaim(claim('mine'))).toBe(true);
    expect((await new ClaimStore(dir).list()).map((c) => c.job)).toEqual(['mine']);
  });

  it('refuses names that could leave the claims dir', async () => {
    await expect(new ClaimStore(dir).tryClaim(claim('x', '../evil'))).rejects.toThrow(/not a runner name/);
  });
});
