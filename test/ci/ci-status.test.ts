import { describe, expect, it } from 'vitest';
import { profileCiSummary, runnerCiStates } from '../../src/ci/ci-status.js';
import type { CiSpec } from '../../src/sources/view.js';
import { aProfile, aRunner } from '../builders/guests.js';

const github: CiSpec = {
  kind: 'github',
  api: 'http://x',
  scope: { kind: 'org', org: 'acme' },
  runnerGroupId: 1,
  labels: [],
  auth: { kind: 'token', tokenFile: '/t' },
};

describe("each runner's CI state for status", () => {
  it('github: registered (idle/busy/offline), not registered, and orphaned registrations of this host only', () => {
    const profile = { ...aProfile().build(), ci: github };
    const runners = [1, 2, 3].map((i) => aRunner().index_(i).build());
    const result = runnerCiStates({
      profile,
      runners,
      host: 'h',
      claims: [],
      outage: undefined,
      ciState: {
        updatedAt: '',
        scopes: [
          {
            profiles: ['tiny'],
            scope: 'acme',
            checkedAt: '',
            deletedOrphans: [],
            registrations: [
              { id: 1, name: 'ci-runner-tiny.1@h', status: 'online', busy: true },
              { id: 2, name: 'ci-runner-tiny.2@h', status: 'online', busy: false },
              { id: 4, name: 'ci-runner-tiny.4@h', status: 'offline', busy: false },
            ],
          },
        ],
      },
    });
    expect(result.runners.map((r) => r.state)).toEqual([
      'registered (busy)',
      'registered (idle)',
      'not registered (its job is done, or it was never registered)',
    ]);
    expect(result.orphans).toEqual(['ci-runner-tiny.4@h']);
  });

  it('github: the last look failed', () => {
    const profile = { ...aProfile().build(), ci: github };
    const result = runnerCiStates({
      profile,
      runners: [aRunner().index_(1).build()],
      host: 'h',
      claims: [],
      outage: undefined,
      ciState: {
        updatedAt: '',
        scopes: [
          {
            profiles: ['tiny'],
            scope: 'acme',
            checkedAt: '',
            deletedOrphans: [],
            registrations: [],
            error: 'GitHub: 503',
          },
        ],
      },
    });
    expect(result.runners[0]?.state).toBe('failing: GitHub: 503');
  });

  it('gitlab: busy while a job holds it, idle otherwise', () => {
    const profile = { ...aProfile().build(), ci: { kind: 'gitlab' as const, buildsDir: '/b', cacheDir: '/c' } };
    const result = runnerCiStates({
      profile,
      runners: [aRunner().index_(1).build(), aRunner().index_(2).build()],
      host: 'h',
      ciState: undefined,
      outage: undefined,
      claims: [{ runner: 'ci-runner-tiny.1', profile: 'tiny', job: '42', claimedAt: 'T', guestCreatedAt: '' }],
    });
    expect(result.runners.map((r) => r.state)).toEqual(['busy (claimed by job 42 at T)', 'idle']);
  });

  it('gitlab: a claim older than ci.maxJobDuration shows as stale', () => {
    const profile = { ...aProfile().build(), ci: { kind: 'gitlab' as const, buildsDir: '/b', cacheDir: '/c' } };
    const claim = (runner: string, job: string, claimedAt: string) => ({
      runner,
      profile: 'tiny',
      job,
      claimedAt,
      guestCreatedAt: '',
    });
    const result = runnerCiStates({
      profile,
      runners: [aRunner().index_(1).build(), aRunner().index_(2).build()],
      host: 'h',
      ciState: undefined,
      outage: undefined,
      claims: [
        claim('ci-runner-tiny.1', '41', '2026-11-24T05:00:00.000Z'),
        claim('ci-runner-tiny.2', '42', '2026-11-24T11:00:00.000Z'),
      ],
      staleBefore: '2026-11-24T06:00:00.000Z',
    });
    expect(result.runners.map((r) => r.state)).toEqual([
      'stale claim (job 41 at 2026-11-24T05:00:00.000Z: no cleanup within ci.maxJobDuration; the next pass replaces it)',
      'busy (claimed by job 42 at 2026-11-24T11:00:00.000Z)',
    ]);
  });

  it('the profile summary counts busy runners where the system can tell, and is null without ci:', () => {
    const runners = [aRunner().index_(1).build(), aRunner().index_(2).build()];
    const facts = {
      host: 'h',
      ciState: undefined,
      outages: {},
      claims: [{ runner: 'ci-runner-tiny.1', profile: 'tiny', job: '42', claimedAt: 'T', guestCreatedAt: '' }],
    };
    const gitlab = { ...aProfile().build(), ci: { kind: 'gitlab' as const, buildsDir: '/b', cacheDir: '/c' } };
    expect(profileCiSummary(gitlab, runners, facts)).toMatchObject({ system: 'gitlab', busy: 1, failing: null });
    // GitHub before any sweep, and hooks: the system cannot tell who is busy.
    expect(profileCiSummary({ ...aProfile().build(), ci: github }, runners, facts)?.busy).toBeNull();
    const swept = {
      ...facts,
      ciState: {
        updatedAt: '',
        scopes: [
          {
            profiles: ['tiny'],
            scope: 'acme',
            checkedAt: '',
            registrations: [
              { id: 1, name: 'ci-runner-tiny.1@h', status: 'online', busy: true },
              { id: 2, name: 'ci-runner-tiny.2@h', status: 'online', busy: false },
            ],
            deletedOrphans: [],
          },
        ],
      },
    };
    expect(profileCiSummary({ ...aProfile().build(), ci: github }, runners, swept)?.busy).toBe(1);
    expect(profileCiSummary(aProfile().build(), runners, facts)).toBeNull();
  });
});
