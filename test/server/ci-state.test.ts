import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CiState } from '../../src/ci/ci-state.js';
import type { Claim } from '../../src/state/claims.js';
import { cleanup } from '../builders/profile-dir.js';
import { eventually, startServe, type Served } from './serve-harness.js';

interface RunnerCi {
  name: string;
  state: string;
}
interface Profile {
  name: string;
  runners: { ready: number; busy: number | null };
  ci: { system: string; failing: string | null; busy: number | null; runners: RunnerCi[]; orphans: string[] } | null;
}
interface Runner {
  name: string;
  profile: string;
  createdAt: string;
  ci: { system: string; state: string; busy: boolean } | null;
}

const json = async <T>(res: Response): Promise<T> => (await res.json()) as T;
const allRunners = async (served: Served) =>
  (await json<{ runners: Runner[] }>(await served.get('/api/v1/runners'))).runners;

const busyGauge = async (served: Served) => {
  const text = await (await served.get('/metrics')).text();
  const family = parsePrometheusTextFormat(text).find((f) => f.name === 'corral_runners_busy');
  return Object.fromEntries((family?.metrics ?? []).map((m) => [m.labels?.profile, m.value]));
};

describe("corral serve: runners' CI state, derived as `corral status` derives it (memory backend)", () => {
  describe('GitLab: a claim file makes a runner busy', () => {
    let served: Served;
    beforeAll(async () => {
      served = await startServe({
        profiles: { pool: 2, plain: 1 },
        profileYaml: { pool: { ci: { gitlab: { buildsDir: '/tmp/builds' } } } },
      });
    });
    afterAll(async () => {
      expect(await served.stop()).toBe(0);
      await cleanup();
    });

    it('fills the profile summary, runners.busy, each runner and the busy gauge from state/claims/', async () => {
      expect((await served.post('/api/v1/reconcile')).status).toBe(202);
      const runners = await eventually(
        async () => {
          const all = await allRunners(served);
          return all.filter((r) => r.profile === 'pool').length === 2 ? all : undefined;
        },
        15_000,
        'two pool runners',
      );
      const [held, free] = runners.filter((r) => r.profile === 'pool').sort((a, b) => a.name.localeCompare(b.name));
      // Before any claim: both idle, none busy; a profile without ci: has no CI state at all.
      expect(await json<Profile>(await served.get('/api/v1/profiles/pool'))).toMatchObject({
        runners: { busy: 0 },
        ci: { system: 'gitlab', busy: 0, failing: null },
      });
      expect(await json<Profile>(await served.get('/api/v1/profiles/plain'))).toMatchObject({
        runners: { busy: null },
        ci: null,
      });
      expect(await busyGauge(served)).toEqual({ pool: '0' });

      const claimedAt = new Date(Date.now() - 60_000).toISOString();
      const claim: Claim = {
        runner: held!.name,
        profile: 'pool',
        job: '4711',
        // Recent, as a live claim is (one older than ci.maxJobDuration, 6 h, is stale and holds nothing).
        claimedAt,
        guestCreatedAt: held!.createdAt,
      };
      await mkdir(join(served.stateDir, 'claims'), { recursive: true });
      await writeFile(join(served.stateDir, 'claims', `${held!.name}.json`), `${JSON.stringify(claim)}\n`);

      // Snapshots are cached for a moment: the next one reads the claim.
      const pool = await eventually(
        async () => {
          const p = await json<Profile>(await served.get('/api/v1/profiles/pool'));
          return p.runners.busy === 1 ? p : undefined;
        },
        5_000,
        'the claim read',
      ).catch(async () => json<Profile>(await served.get('/api/v1/profiles/pool')));
      expect(pool.runners.busy).toBe(1);
      expect(pool.ci).toEqual({
        system: 'gitlab',
        failing: null,
        busy: 1,
        runners: [
          { name: held!.name, state: `busy (claimed by job 4711 at ${claimedAt})` },
          { name: free!.name, state: 'idle' },
        ],
        orphans: [],
      });
      const after = await allRunners(served);
      expect(after.find((r) => r.name === held!.name)?.ci).toEqual({
        system: 'gitlab',
        state: `busy (claimed by job 4711 at ${claimedAt})`,
        busy: true,
      });
      expect(after.find((r) => r.name === free!.name)?.ci).toEqual({ system: 'gitlab', state: 'idle', busy: false });
      expect(after.find((r) => r.profile === 'plain')?.ci).toBeNull();
      expect(await busyGauge(served)).toEqual({ pool: '1' });
    });
  });

  describe("GitHub: the last sweep's ci-state.json and the CI back-off", () => {
    let served: Served;
    beforeAll(async () => {
      // No pass runs here (it would call GitHub): the console shows the sources compiled now.
      served = await startServe({
        profiles: { gh: 0 },
        hostYaml: { ci: { host: 'h1' } },
        profileYaml: {
          gh: {
            ci: { github: { api: 'http://127.0.0.1:9', owner: 'acme', repo: 'widgets', tokenFile: 'token' } },
          },
        },
      });
    });
    afterAll(async () => {
      expect(await served.stop()).toBe(0);
      await cleanup();
    });

    it('unknown before a sweep; then orphaned registrations of this host, busy 0, and failing with its reason', async () => {
      const before = await json<Profile>(await served.get('/api/v1/profiles/gh'));
      expect(before.ci).toMatchObject({ system: 'github', busy: null, orphans: [] });
      expect(before.runners.busy).toBeNull();
      expect(await busyGauge(served)).toEqual({});

      const state: CiState = {
        updatedAt: '2026-11-27T14:40:00.000Z',
        scopes: [
          {
            profiles: ['gh'],
            scope: 'acme/widgets',
            checkedAt: '2026-11-27T14:40:00.000Z',
            registrations: [
              { id: 7, name: 'ci-runner-gh.3@h1', status: 'online', busy: true },
              { id: 8, name: 'ci-runner-gh.4@other-host', status: 'online', busy: false },
            ],
            deletedOrphans: [],
          },
        ],
      };
      await mkdir(served.stateDir, { recursive: true });
      await writeFile(join(served.stateDir, 'ci-state.json'), JSON.stringify(state));
      await writeFile(
        join(served.stateDir, 'ci-outages.json'),
        JSON.stringify({
          gh: {
            system: 'GitHub',
            summary: 'HTTP 503',
            since: '2026-11-27T14:37:00.000Z',
            retryAt: '2026-11-27T14:39:00.000Z',
            failures: 1,
          },
        }),
      );
      // Snapshots are cached for a moment: the next one reads the seeded files.
      const after = await eventually(
        async () => {
          const p = await json<Profile>(await served.get('/api/v1/profiles/gh'));
          return p.ci?.failing ? p : undefined;
        },
        5_000,
        'the seeded CI state read',
      ).catch(async () => json<Profile>(await served.get('/api/v1/profiles/gh')));
      expect(after.ci).toEqual({
        system: 'github',
        failing: 'GitHub: HTTP 503 since 14:37, retry at 14:39',
        busy: 0,
        runners: [],
        orphans: ['ci-runner-gh.3@h1'],
      });
      expect(after.runners.busy).toBe(0);
      expect(await busyGauge(served)).toEqual({ gh: '0' });
    });
  });
});
