/**
 * CI registration inside real passes (the memory backend the product ships), with corral's real
 * octokit client against the documented fake GitHub server, and real hook commands.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { converge, runPass, type PassDeps } from '../../src/reconcile/pass.js';
import { createRunnerCi } from '../../src/ci/runner-ci.js';
import type { HostConfig } from '../../src/config/host-config.js';
import { MemoryHypervisor } from '../../src/hypervisor/memory/memory-hypervisor.js';
import type { CiSpec, CompiledProfile, CompiledView } from '../../src/sources/view.js';
import { BackoffStore } from '../../src/state/backoff-store.js';
import { CiOutageStore } from '../../src/state/ci-outages.js';
import { readCiState } from '../../src/ci/ci-state.js';
import { ClaimStore } from '../../src/state/claims.js';
import { DeregistrationStore } from '../../src/state/ci-deregistrations.js';
import { EventLog } from '../../src/state/events.js';
import { aProfile, HASH_B } from '../builders/guests.js';
import { FAKE_GITHUB_TOKEN, startFakeGitHub, type FakeGitHub } from '../harness/fake-github.js';

const HOST = 'host-a';
const SCOPE = 'repos/acme/widgets';
let gh: FakeGitHub;
let dir: string;
let stateDir: string;
let now: Date;

beforeAll(async () => {
  gh = await startFakeGitHub();
  dir = await mkdtemp(join(tmpdir(), 'corral-cipass-'));
  await writeFile(join(dir, 'token'), FAKE_GITHUB_TOKEN, { mode: 0o600 });
});
afterAll(async () => {
  await gh.close();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  stateDir = await mkdtemp(join(dir, 'state-'));
  now = new Date('2026-11-27T14:02:00Z');
});
afterEach(() => {
  gh.down(undefined);
  gh.runners.clear();
  gh.issued.length = 0;
});

function githubCi(): CiSpec {
  return {
    kind: 'github',
    api: gh.url,
    scope: { kind: 'repo', owner: 'acme', repo: 'widgets' },
    runnerGroupId: 1,
    labels: ['big'],
    auth: { kind: 'token', tokenFile: join(dir, 'token') },
  };
}

function profileWith(name: string, ci: CiSpec | undefined, runners = 2, hash?: string): CompiledProfile {
  const builder = aProfile(name).runners(runners);
  if (hash) builder.withHash(hash);
  const p = builder.build();
  p.dir = dir;
  if (ci) p.ci = ci;
  return p;
}

function world(profiles: CompiledProfile[]) {
  const view: CompiledView = { format_version: 1, hash: 'h', generation: 1, compiledAt: '', masked: [], profiles };
  const clock = () => now;
  const hypervisor = new MemoryHypervisor({ prefix: 'ci', clock });
  const log = pino({ level: 'silent' });
  const deps: PassDeps = {
    config: { prefix: 'ci', keepTemplates: 2, concurrency: { builds: 2, clones: 4 }, stateDir } as HostConfig,
    hypervisor,
    log,
    clock,
    sleep: async () => {},
    events: new EventLog(stateDir),
    runnerBackoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 60 }, 'runner-backoff.json'),
    backoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 60 }),
    pollMs: 0,
    ci: createRunnerCi({
      host: HOST,
      log,
      clock,
      env: { PATH: process.env.PATH },
      arch: 'x64',
      tuning: { timeoutMs: 15_000, retries: 0, retryBaseMs: 1, minWriteIntervalMs: 0 },
    }),
    ciOutages: new CiOutageStore(stateDir, { initialSeconds: 120, maxSeconds: 600 }),
    deregistrations: new DeregistrationStore(stateDir, { initialSeconds: 120, maxSeconds: 600 }),
    claims: new ClaimStore(stateDir),
  };
  return { view, hypervisor, deps };
}

const seedOf = (hv: MemoryHypervisor, name: string) => hv.seedFiles(name);
const registered = () => [...gh.runners.values()].map((r) => r.name).sort();

describe('GitHub JIT runners in passes', () => {
  it("each runner's seed holds the JIT config issued for exactly that runner name", async () => {
    const { view, hypervisor, deps } = world([profileWith('tiny', githubCi())]);
    await converge(view, deps);
    expect(registered()).toEqual(['ci-runner-tiny.1@host-a', 'ci-runner-tiny.2@host-a']);
    for (const runner of ['ci-runner-tiny.1', 'ci-runner-tiny.2']) {
      const issued = gh.issued.find((i) => i.name === `${runner}@${HOST}`);
      expect(await seedOf(hypervisor, runner)).toEqual({ 'github-jitconfig': issued?.encodedJitConfig });
      expect(issued?.labels).toEqual(['self-hosted', 'X64', 'corral-tiny', 'big']);
    }
    // The secret is nowhere in the events or the CI snapshot.
    const secret = gh.issued[0]!.encodedJitConfig;
    expect(await readFile(join(stateDir, 'events.jsonl'), 'utf8')).not.toContain(secret);
    expect(JSON.stringify(await readCiState(stateDir))).not.toContain(secret);
    expect((await readCiState(stateDir))?.scopes[0]?.registrations.map((r) => r.name).sort()).toEqual(registered());
  });

  it('a runner that shut off (job done) is replaced and the replacement registered afresh', async () => {
    const { view, hypervisor, deps } = world([profileWith('tiny', githubCi())]);
    await converge(view, deps);
    const before = gh.issued.find((i) => i.name === 'ci-runner-tiny.1@host-a')!.encodedJitConfig;
    hypervisor.setState('ci-runner-tiny.1', 'shutoff');
    await converge(view, deps);
    const issued = gh.issued.filter((i) => i.name === 'ci-runner-tiny.1@host-a');
    expect(issued).toHaveLength(2);
    expect(await seedOf(hypervisor, 'ci-runner-tiny.1')).toEqual({ 'github-jitconfig': issued[1]!.encodedJitConfig });
    expect(issued[1]!.encodedJitConfig).not.toBe(before);
    expect(registered()).toEqual(['ci-runner-tiny.1@host-a', 'ci-runner-tiny.2@host-a']);
  });

  it("a guest destroyed by hand loses its registration on the next pass; other hosts' are kept", async () => {
    const { view, hypervisor, deps } = world([profileWith('tiny', githubCi(), 1)]);
    await converge(view, deps);
    gh.addRunner(SCOPE, 'ci-runner-tiny.7@host-a'); // leftover of a guest that is long gone
    gh.addRunner(SCOPE, 'ci-runner-tiny.7@host-b'); // another host's
    gh.addRunner(SCOPE, 'laptop'); // not corral's
    const firstId = [...gh.runners.values()].find((r) => r.name === 'ci-runner-tiny.1@host-a')!.id;
    await hypervisor.destroy('ci-runner-tiny.1');
    await runPass(view, deps);
    expect(registered()).toEqual(['ci-runner-tiny.1@host-a', 'ci-runner-tiny.7@host-b', 'laptop']);
    // …and the one there now is the replacement's, not the stale one.
    expect(gh.runners.has(firstId)).toBe(false);
    const state = await readCiState(stateDir);
    expect(state?.scopes[0]?.deletedOrphans).toEqual(['ci-runner-tiny.7@host-a']);
  });

  it('GitHub down: other profiles converge, existing runners stay, creation backs off, the wait says why', async () => {
    const { view, hypervisor, deps } = world([
      profileWith('tiny', githubCi(), 2),
      profileWith('plain', undefined, 1, HASH_B),
    ]);
    await converge(view, deps);
    hypervisor.setState('ci-runner-tiny.2', 'shutoff');
    view.profiles[1]!.runners = 2;
    gh.down('503');
    const result = await converge(view, deps);
    const names = hypervisor.guestNames();
    expect(names.filter((n) => n.startsWith('ci-runner-plain.'))).toEqual(['ci-runner-plain.1', 'ci-runner-plain.2']);
    expect(names).toContain('ci-runner-tiny.1');
    expect(names).not.toContain('ci-runner-tiny.2');
    const failed = result.results.filter((r) => !r.ok);
    expect(failed.map((r) => r.error)).toEqual(['GitHub: 503 Service Unavailable']);
    expect(result.last.waits).toContainEqual({
      profile: 'tiny',
      kind: 'ci-outage',
      until: '2026-11-27T14:04:00.000Z',
      reason: 'GitHub: 503 Service Unavailable since 14:02, retry at 14:04',
    });
    // While backing off, passes do not call GitHub to create runners.
    const posts = gh.requests.filter((r) => r.method === 'POST').length;
    now = new Date('2026-11-27T14:03:00Z');
    await runPass(view, deps);
    expect(gh.requests.filter((r) => r.method === 'POST').length).toBe(posts);
    // GitHub is back and the retry time has passed: the runner comes back.
    gh.down(undefined);
    now = new Date('2026-11-27T14:05:00Z');
    await converge(view, deps);
    expect(hypervisor.guestNames()).toContain('ci-runner-tiny.2');
    expect(registered()).toEqual(['ci-runner-tiny.1@host-a', 'ci-runner-tiny.2@host-a']);
    expect(await deps.ciOutages!.read()).toEqual({});
  });

  it('a rate limit is honoured: the retry time is the reset, not our shorter back-off', async () => {
    const { view, deps } = world([profileWith('tiny', githubCi(), 1)]);
    gh.rateLimitResetIn = 3600;
    gh.down('ratelimit403');
    now = new Date();
    await converge(view, deps);
    const outage = (await deps.ciOutages!.read()).tiny;
    expect(outage?.summary).toBe('403 rate limited');
    expect(Date.parse(outage!.retryAt) - Date.now()).toBeGreaterThan(3500_000);
  });

  it('an HTML 502 page and a 401 are reported short, and nothing crashes', async () => {
    for (const fault of ['html502', '401'] as const) {
      stateDir = await mkdtemp(join(dir, 'state-'));
      const { view, deps } = world([profileWith('tiny', githubCi(), 1)]);
      gh.down(fault);
      const result = await converge(view, deps);
      const summary = fault === '401' ? '401 Bad credentials' : 'HTML 502 page';
      expect(result.last.waits.map((w) => w.reason)).toEqual([`GitHub: ${summary} since 14:02, retry at 14:04`]);
      gh.down(undefined);
    }
  });
});

describe('generic hooks', () => {
  it('what register writes into the seed dir lands on the seed; deregister runs after destroy', async () => {
    const log = join(dir, 'hook.log');
    const hook: CiSpec = {
      kind: 'hook',
      register: `echo "token-for-$CORRAL_RUNNER" > "$CORRAL_SEED_DIR/buildkite-token"; echo "reg $CORRAL_RUNNER $CORRAL_PROFILE $CORRAL_HOST" >> ${log}`,
      deregister: `echo "dereg $CORRAL_RUNNER" >> ${log}`,
      timeoutSeconds: 10,
    };
    const { view, hypervisor, deps } = world([profileWith('tiny', hook, 1)]);
    await converge(view, deps);
    expect(await seedOf(hypervisor, 'ci-runner-tiny.1')).toEqual({ 'buildkite-token': 'token-for-ci-runner-tiny.1\n' });
    view.profiles[0]!.runners = 0;
    await converge(view, deps);
    expect((await readFile(log, 'utf8')).trim().split('\n')).toEqual([
      'reg ci-runner-tiny.1 tiny host-a',
      'dereg ci-runner-tiny.1',
    ]);
  });

  it('a failing hook is a transient failure with its stderr in the events, retried after the back-off', async () => {
    const flag = join(dir, 'hook-ok');
    const hook: CiSpec = {
      kind: 'hook',
      register: `test -e ${flag} || { echo "forge says no: 500" >&2; exit 3; }; echo t > "$CORRAL_SEED_DIR/token"`,
      timeoutSeconds: 10,
    };
    const { view, hypervisor, deps } = world([profileWith('tiny', hook, 1)]);
    const first = await converge(view, deps);
    expect(first.results.filter((r) => !r.ok).map((r) => r.error)).toEqual([
      'hook: register exited with status 3: forge says no: 500',
    ]);
    const events = await deps.events.recent();
    expect(events.find((e) => e.action === 'create-runner')?.error).toContain('forge says no: 500');
    expect(first.last.waits.map((w) => w.reason)).toContain(
      'hook: register exited with status 3: forge says no: 500 since 14:02, retry at 14:04',
    );
    await writeFile(flag, '');
    now = new Date('2026-11-27T14:05:00Z');
    await converge(view, deps);
    expect(await seedOf(hypervisor, 'ci-runner-tiny.1')).toEqual({ token: 't\n' });
  });

  it('a failing deregister is kept, shown, retried after the back-off, and blocks re-registering that name', async () => {
    const flag = join(dir, 'dereg-ok');
    const log = join(dir, 'dereg.log');
    const hook: CiSpec = {
      kind: 'hook',
      register: `echo "reg $CORRAL_RUNNER" >> ${log}`,
      deregister: `test -e ${flag} || { echo "forge says no: 503" >&2; exit 4; }; echo "dereg $CORRAL_RUNNER" >> ${log}`,
      timeoutSeconds: 10,
    };
    const { view, hypervisor, deps } = world([profileWith('tiny', hook, 1)]);
    await converge(view, deps);
    // The runner's job is done: it shuts off and is replaced under the same name.
    hypervisor.setState('ci-runner-tiny.1', 'shutoff');
    const first = await converge(view, deps);
    const failed = (await deps.events.recent()).filter((e) => e.action === 'deregister');
    expect(failed).toEqual([
      expect.objectContaining({
        guest: 'ci-runner-tiny.1',
        ok: false,
        error: 'hook: deregister exited with status 4: forge says no: 503',
        reason: 'after its guest was destroyed; retry at 2026-11-27T14:04:00.000Z',
      }),
      // The replacement of the same name tried it once more first.
      expect.objectContaining({
        guest: 'ci-runner-tiny.1',
        ok: false,
        reason: 'retry 2; next at 2026-11-27T14:06:00.000Z',
      }),
    ]);
    // Not registered again while its old registration stands: the creation backs off, and says why.
    expect(hypervisor.guestNames().filter((n) => n.includes('runner'))).toEqual([]);
    expect(first.last.waits.map((w) => `${w.kind}: ${w.reason}`)).toEqual(
      expect.arrayContaining([
        'ci-deregister: deregistering ci-runner-tiny.1 failed 2 time(s) since 14:02, retry at 14:06: hook: deregister exited with status 4: forge says no: 503',
      ]),
    );
    expect(first.last.requeue?.at).toBe('2026-11-27T14:04:00.000Z');
    expect(await new DeregistrationStore(stateDir, { initialSeconds: 1, maxSeconds: 1 }).read()).toMatchObject({
      'ci-runner-tiny.1': { profile: 'tiny', failures: 2, lastError: expect.stringContaining('forge says no') },
    });
    // The hook works again: after the back-off the deregistration goes through, then the new runner registers.
    await writeFile(flag, '');
    now = new Date('2026-11-27T14:07:00Z');
    await converge(view, deps);
    expect((await readFile(log, 'utf8')).trim().split('\n')).toEqual([
      'reg ci-runner-tiny.1',
      'dereg ci-runner-tiny.1',
      'reg ci-runner-tiny.1',
    ]);
    expect(await new DeregistrationStore(stateDir, { initialSeconds: 1, maxSeconds: 1 }).read()).toEqual({});
    expect(hypervisor.guestNames()).toContain('ci-runner-tiny.1');
  });
});
