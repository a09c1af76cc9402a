/**
 * gitlab-runner's custom executor stages against the in-memory backend the product ships, with
 * its opt-in host scripts standing in for the guest agent (real processes: output, exit status,
 * a cancelled job's process group) and real claim files.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  cleanupStage,
  prepareStage,
  runStage,
  SystemFailure,
  type DriverDeps,
  type JobEnv,
} from '../../src/ci/gitlab/driver.js';
import type { HostConfig } from '../../src/config/host-config.js';
import { MemoryHypervisor } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { converge, type PassDeps } from '../../src/reconcile/pass.js';
import type { CompiledView } from '../../src/sources/view.js';
import { BackoffStore } from '../../src/state/backoff-store.js';
import { ClaimStore } from '../../src/state/claims.js';
import { EventLog } from '../../src/state/events.js';
import { aProfile } from '../builders/guests.js';

const BUILD_FAILURE = 37;
const SYSTEM_FAILURE = 38;
let dir: string;
let now: Date;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corral-gitlab-'));
  now = new Date('2026-11-27T14:00:00Z');
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

/** A converged gitlab pool of `runners` on the memory backend. */
async function pool(runners = 2, opts: { hostScripts?: boolean } = {}) {
  const profile = aProfile('pool').runners(runners).build();
  profile.ci = { kind: 'gitlab', buildsDir: '/builds', cacheDir: '/cache' };
  const view: CompiledView = {
    format_version: 1,
    hash: 'h',
    generation: 1,
    compiledAt: '',
    masked: [],
    profiles: [profile],
  };
  const clock = () => now;
  const stateDir = join(dir, 'state');
  const hypervisor = new MemoryHypervisor({
    prefix: 'ci',
    clock,
    seedsDir: join(stateDir, 'memory-seeds'),
    ...(opts.hostScripts === false ? {} : { hostScriptsDir: join(stateDir, 'memory-guests') }),
  });
  const claims = new ClaimStore(stateDir);
  const passDeps: PassDeps = {
    config: { prefix: 'ci', keepTemplates: 2, concurrency: { builds: 2, clones: 4 }, stateDir } as HostConfig,
    hypervisor,
    log: pino({ level: 'silent' }),
    clock,
    sleep: async () => {},
    events: new EventLog(stateDir),
    runnerBackoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 60 }, 'runner-backoff.json'),
    backoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 60 }),
    pollMs: 0,
    claims,
  };
  await converge(view, passDeps);
  const said: string[] = [];
  const deps: DriverDeps = {
    view,
    hypervisor,
    claims,
    host: 'host-a',
    version: '0.0.0',
    clock,
    // Waiting moves the injected clock: a 10-minute wait takes no real time.
    sleep: async (ms) => {
      now = new Date(now.getTime() + ms);
    },
    say: (line) => said.push(line),
    agentWaitMs: 10_000,
    claimWaitMs: 0,
  };
  return { view, hypervisor, claims, deps, said, passDeps };
}

function job(id: number, extra: Partial<JobEnv> = {}): JobEnv {
  return {
    image: 'pool',
    job: String(id),
    buildFailureExitCode: BUILD_FAILURE,
    systemFailureExitCode: SYSTEM_FAILURE,
    buildExitCodeFile: undefined,
    ...extra,
  };
}

async function script(name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

describe('gitlab prepare', () => {
  it('claims only runners whose guest said ready (no word counts as ready), never booting or busy ones', async () => {
    const { hypervisor, deps } = await pool(3);
    hypervisor.setCondition('ci-runner-pool.1', 'booting');
    hypervisor.setCondition('ci-runner-pool.2', 'busy');
    expect((await prepareStage(deps, job(1))).runner).toBe('ci-runner-pool.3');
    hypervisor.setCondition('ci-runner-pool.2', 'ready');
    expect((await prepareStage(deps, job(2))).runner).toBe('ci-runner-pool.2');
    await expect(prepareStage(deps, job(3))).rejects.toThrow(
      'no free runner of profile pool: 3 runner(s): 2 claimed by other jobs, 1 booting (ci.claimWait is 0: no wait)',
    );
    // gitlab-runner retries prepare: the job gets the runner it already holds.
    expect((await prepareStage(deps, job(1))).runner).toBe('ci-runner-pool.3');
  });

  it('4 concurrent prepares on a pool of 2 with no wait: 2 distinct runners and 2 system failures', async () => {
    const { deps } = await pool(2);
    const results = await Promise.allSettled([1, 2, 3, 4].map((j) => prepareStage(deps, job(j))));
    const won = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.runner);
    expect(won.sort()).toEqual(['ci-runner-pool.1', 'ci-runner-pool.2']);
    const lost = results.filter((r) => r.status === 'rejected').map((r) => r.reason as Error);
    expect(lost).toHaveLength(2);
    for (const e of lost) expect(e).toBeInstanceOf(SystemFailure);
  });

  it('waits for a runner to come free, saying so every 15 s, and gets it', async () => {
    const { hypervisor, deps, said } = await pool(1);
    hypervisor.setCondition('ci-runner-pool.1', 'booting');
    const start = now.getTime();
    let looks = 0;
    const sleep = deps.sleep;
    deps.sleep = async (ms) => {
      // The runner says ready after about 40 s.
      if (++looks === 20) hypervisor.setCondition('ci-runner-pool.1', 'ready');
      await sleep(ms);
    };
    const claim = await prepareStage({ ...deps, claimWaitMs: 600_000 }, job(1));
    expect(claim.runner).toBe('ci-runner-pool.1');
    expect(now.getTime() - start).toBe(40_000);
    const progress = said.filter((l) => l.startsWith('corral: waiting'));
    expect(progress).toEqual([
      'corral: waiting for a free runner of profile pool: 1 runner(s): 1 booting (waited 16s of 600s)',
      'corral: waiting for a free runner of profile pool: 1 runner(s): 1 booting (waited 32s of 600s)',
    ]);
    expect(said.at(-1)).toBe('corral: job 1 runs on ci-runner-pool.1 (profile pool, host host-a)');
  });

  it('fails with a system failure once ci.claimWait is over', async () => {
    const { deps } = await pool(1);
    await prepareStage(deps, job(1));
    const start = now.getTime();
    await expect(prepareStage({ ...deps, claimWaitMs: 60_000 }, job(2))).rejects.toThrow(
      'no free runner of profile pool after waiting 60s (ci.claimWait): 1 runner(s): 1 claimed by other jobs',
    );
    expect(now.getTime() - start).toBe(60_000);
  });

  it('a cancel (SIGTERM) ends the wait at once', async () => {
    const { deps } = await pool(1);
    await prepareStage(deps, job(1));
    const stop = new AbortController();
    const sleep = deps.sleep;
    const waiting = prepareStage(
      {
        ...deps,
        claimWaitMs: 600_000,
        signal: stop.signal,
        sleep: async (ms) => {
          stop.abort();
          await sleep(ms);
        },
      },
      job(2),
    );
    await expect(waiting).rejects.toThrow(/cancelled while waiting for a free runner of profile pool/);
  });

  it('a backend that cannot run scripts is a system failure that says why', async () => {
    const { deps } = await pool(1, { hostScripts: false });
    await expect(prepareStage(deps, job(1))).rejects.toThrow(/CORRAL_MEMORY_SCRIPTS=host/);
  });
});

describe('gitlab run and cleanup', () => {
  it("streams the script's output; a failure writes its code and exits BUILD_FAILURE", async () => {
    const { deps } = await pool(1);
    const claim = await prepareStage(deps, job(1));
    const exitFile = join(dir, 'exit-code');
    const out: Buffer[] = [];
    const ok = await runStage(
      deps,
      job(1),
      await script('prep', 'echo "on $CORRAL_MEMORY_GUEST"\n'),
      'prepare_script',
      (c) => out.push(c),
    );
    expect(ok).toBe(0);
    expect(Buffer.concat(out).toString()).toBe(`on ${claim.runner}\n`);
    out.length = 0;
    const failed = await runStage(
      deps,
      job(1, { buildExitCodeFile: exitFile }),
      await script('build', '#!/bin/sh\necho one\necho two >&2\nexit 3\n'),
      'build_script',
      (c) => out.push(c),
    );
    expect(failed).toBe(BUILD_FAILURE);
    expect(await readFile(exitFile, 'utf8')).toBe('3');
    expect(Buffer.concat(out).toString()).toBe('one\ntwo\n');
  });

  it('a job that holds no runner is a system failure', async () => {
    const { deps } = await pool(1);
    await expect(runStage(deps, job(9), await script('s', 'true\n'), 'build_script', () => {})).rejects.toThrow(
      'job 9 holds no corral runner (did prepare run?)',
    );
  });

  it('SIGTERM stops the script and everything it started (its process group), and says how it ended', async () => {
    const { deps, said } = await pool(1);
    await prepareStage(deps, job(1));
    const pidFile = join(dir, 'child.pid');
    const exitFile = join(dir, 'exit-code');
    const stop = new AbortController();
    const text = `sleep 60 & echo $! > ${pidFile}\necho started\nwait\necho never\n`;
    const out: string[] = [];
    const running = runStage(
      { ...deps, signal: stop.signal, killGraceMs: 2000 },
      job(1, { buildExitCodeFile: exitFile }),
      await script('long', text),
      'build_script',
      (c) => {
        out.push(c.toString());
        if (c.toString().includes('started')) stop.abort();
      },
    );
    const started = Date.now();
    expect(await running).toBe(BUILD_FAILURE);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(out.join('')).not.toContain('never');
    expect(await readFile(exitFile, 'utf8')).toBe('143');
    expect(said.at(-1)).toBe(
      'corral: job 1 cancelled: stopped build_script in ci-runner-pool.1 (it ended with status 143)',
    );
    const child = Number(await readFile(pidFile, 'utf8'));
    await new Promise((r) => setTimeout(r, 200));
    // Gone, or a zombie waiting for a reaper that is not ours: either way no longer running.
    const state = await readFile(`/proc/${child}/stat`, 'utf8').then(
      (s) => s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3),
      () => 'gone',
    );
    expect(['gone', 'Z', 'X']).toContain(state);
  });

  it('a script that ignores SIGTERM is killed after the grace period', async () => {
    const { deps } = await pool(1);
    await prepareStage(deps, job(1));
    const stop = new AbortController();
    const status = runStage(
      { ...deps, signal: stop.signal, killGraceMs: 300 },
      job(1),
      await script('stubborn', `trap '' TERM\necho started\nwhile :; do sleep 0.1; done\n`),
      'build_script',
      (c) => {
        if (c.toString().includes('started')) stop.abort();
      },
    );
    expect(await status).toBe(BUILD_FAILURE);
  });

  it('cleanup destroys the guest with its seed files and scratch dir, and drops the claim', async () => {
    const { hypervisor, deps, claims } = await pool(1);
    const claim = await prepareStage(deps, job(1));
    await runStage(deps, job(1), await script('touch', 'echo hi > file\n'), 'build_script', () => {});
    const scratch = hypervisor.scriptDir(claim.runner)!;
    expect(existsSync(join(scratch, 'file'))).toBe(true);
    expect(await cleanupStage(deps, job(1))).toBe(claim.runner);
    expect(hypervisor.guestNames().filter((n) => n.includes('runner'))).toEqual([]);
    expect(existsSync(scratch)).toBe(false);
    expect(await claims.list()).toEqual([]);
    // gitlab-runner may run cleanup twice: nothing left to do is fine.
    expect(await cleanupStage(deps, job(1))).toBeUndefined();
  });

  it('a claim older than ci.maxJobDuration (its cleanup never came) no longer holds the runner: a pass replaces it', async () => {
    const { hypervisor, deps, passDeps, view } = await pool(2);
    const claim = await prepareStage(deps, job(1));
    const before = (await hypervisor.observe()).guests.find((g) => g.name === claim.runner)!.meta.createdAt;
    const config = { ...passDeps.config, ci: { maxJobSeconds: 3600 } } as HostConfig;
    now = new Date(now.getTime() + 3500_000);
    await converge(view, { ...passDeps, config });
    expect((await hypervisor.observe()).guests.find((g) => g.name === claim.runner)!.meta.createdAt).toBe(before);
    now = new Date(now.getTime() + 200_000);
    await converge(view, { ...passDeps, config });
    const after = (await hypervisor.observe()).guests.find((g) => g.name === claim.runner)!.meta.createdAt;
    expect(after).not.toBe(before);
    const events = await passDeps.events.recent();
    expect(events.find((e) => e.action === 'replace-runner')?.reason).toMatch(/^claim by job 1 at .* is stale/);
    // The fresh guest is free for the next job; the late cleanup of job 1 leaves it alone.
    await cleanupStage(deps, job(1));
    expect((await prepareStage(deps, job(2))).runner).toBe('ci-runner-pool.1');
  });

  it('a claim whose runner was replaced meanwhile: run refuses, cleanup leaves the new guest alone', async () => {
    const { hypervisor, deps, passDeps, view, claims } = await pool(1);
    const claim = await prepareStage(deps, job(1));
    // The runner is replaced behind the claim's back (by hand, or after the claim went stale).
    await hypervisor.destroy(claim.runner);
    now = new Date(now.getTime() + 1000);
    await converge(view, passDeps);
    expect(hypervisor.guestNames()).toContain(claim.runner);
    await expect(runStage(deps, job(1), await script('s', 'true\n'), 'build_script', () => {})).rejects.toThrow(
      /is gone or was replaced/,
    );
    await cleanupStage(deps, job(1));
    expect(hypervisor.guestNames()).toContain(claim.runner);
    expect(await claims.list()).toEqual([]);
  });
});
