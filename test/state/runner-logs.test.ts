/** Runner console logs outlive their runners: the last N per profile, oldest removed first. */
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerLogs } from '../../src/state/runner-logs.js';

let stateDir: string;
beforeAll(async () => (stateDir = await mkdtemp(join(tmpdir(), 'corral-rlogs-'))));
afterAll(() => rm(stateDir, { recursive: true, force: true }));

describe('RunnerLogs', () => {
  it('keeps the last N per profile by time, private to the corral user', async () => {
    const logs = new RunnerLogs(stateDir, 2);
    const at = (s: number) => new Date(Date.UTC(2026, 10, 27, 12, 0, s));
    // Index order and time order differ on purpose: time decides.
    const first = await logs.save('web', 'ci-runner-web.9', 'nine\n', at(1));
    await logs.save('web', 'ci-runner-web.1', 'one\n', at(2));
    await logs.save('db', 'ci-runner-db.1', 'db\n', at(3));
    const last = await logs.save('web', 'ci-runner-web.2', 'two\n', at(4));
    expect((await readdir(join(stateDir, 'runner-logs', 'web'))).sort()).toEqual([
      'ci-runner-web.1.20261127T120002Z.console.log',
      'ci-runner-web.2.20261127T120004Z.console.log',
    ]);
    expect(await readdir(join(stateDir, 'runner-logs', 'db'))).toHaveLength(1);
    expect(first).toMatch(/ci-runner-web\.9\.20261127T120001Z\.console\.log$/);
    expect(await readFile(last, 'utf8')).toBe('two\n');
    expect((await stat(last)).mode & 0o777).toBe(0o600);
  });
});
