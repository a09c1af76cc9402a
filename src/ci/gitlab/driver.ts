/**
 * gitlab-runner's custom executor, stage by stage (docs/ci.md): `config` describes the
 * environment, `prepare` claims a ready runner of the profile the job's image names, `run`
 * executes each sub-stage script inside that guest, `cleanup` destroys the guest so the
 * reconciler replaces it. The claim is a file in the state dir, so it survives a corral restart
 * and the planner never rolls over or scales away a runner a job holds.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Hypervisor, ObservedGuest } from '../../hypervisor/hypervisor.js';
import type { CompiledProfile, CompiledView } from '../../sources/view.js';
import type { Claim, ClaimStore } from '../../state/claims.js';

/** An infrastructure failure: the stage exits with $SYSTEM_FAILURE_EXIT_CODE. */
export class SystemFailure extends Error {
  override readonly name = 'SystemFailure';
}

export interface JobEnv {
  /** CUSTOM_ENV_CI_JOB_IMAGE: the profile the job asks for. */
  image: string | undefined;
  job: string;
  buildFailureExitCode: number;
  systemFailureExitCode: number;
  /** Where a failed script's own exit code goes (allow_failure: exit_codes). */
  buildExitCodeFile: string | undefined;
}

/** The variables gitlab-runner sets for every stage; a missing exit code means we were not started by it. */
export function readJobEnv(env: NodeJS.ProcessEnv): JobEnv {
  const code = (name: string) => {
    const value = env[name];
    if (value === undefined || !/^\d+$/.test(value))
      throw new Error(`${name} is not set: "corral gitlab" is meant to be run by gitlab-runner's custom executor`);
    return Number(value);
  };
  return {
    image: env.CUSTOM_ENV_CI_JOB_IMAGE || undefined,
    job: env.CUSTOM_ENV_CI_JOB_ID ?? '',
    buildFailureExitCode: code('BUILD_FAILURE_EXIT_CODE'),
    systemFailureExitCode: code('SYSTEM_FAILURE_EXIT_CODE'),
    buildExitCodeFile: env.BUILD_EXIT_CODE_FILE || undefined,
  };
}

export interface DriverDeps {
  view: CompiledView;
  hypervisor: Hypervisor;
  claims: ClaimStore;
  host: string;
  version: string;
  clock: () => Date;
  sleep: (ms: number) => Promise<void>;
  /** Job log lines (gitlab-runner shows the driver's stdout and stderr in the job log). */
  say: (line: string) => void;
  /** How long prepare waits for a claimed guest's agent to answer. */
  agentWaitMs: number;
  /** How long prepare waits for a free ready runner (host config `ci.claimWait`; 0: fail at once). */
  claimWaitMs: number;
  /** Between looks at the pool while prepare waits. */
  claimPollMs?: number;
  /** Between progress lines while prepare waits. */
  progressEveryMs?: number;
  /** Aborted on SIGTERM/SIGINT: gitlab-runner cancelled the job or it timed out. */
  signal?: AbortSignal;
  /** Between SIGTERM and SIGKILL of a cancelled script's process group in the guest. */
  killGraceMs?: number;
}

export const CLAIM_POLL_MS = 2000;
export const PROGRESS_EVERY_MS = 15_000;

export function gitlabProfiles(view: CompiledView): CompiledProfile[] {
  return view.profiles.filter((p) => p.ci?.kind === 'gitlab');
}

function profileFor(view: CompiledView, image: string | undefined): CompiledProfile {
  const allowed = gitlabProfiles(view);
  const names = allowed.map((p) => p.name).join(', ') || 'none';
  if (!image)
    throw new SystemFailure(`the job names no image; set "image:" to a corral profile with ci.gitlab (${names})`);
  const profile = allowed.find((p) => p.name === image);
  if (!profile) throw new SystemFailure(`image "${image}" is not a corral profile with ci.gitlab (allowed: ${names})`);
  return profile;
}

/** `config` stage: stdout is this JSON. */
export function configStage(deps: Pick<DriverDeps, 'view' | 'host' | 'version'>, job: JobEnv): object {
  const profile = gitlabProfiles(deps.view).find((p) => p.name === job.image);
  const ci = profile?.ci?.kind === 'gitlab' ? profile.ci : { buildsDir: '/builds', cacheDir: '/cache' };
  return {
    builds_dir: ci.buildsDir,
    cache_dir: ci.cacheDir,
    builds_dir_is_shared: false,
    hostname: deps.host,
    driver: { name: 'corral', version: deps.version },
  };
}

/** A runner a job may take: running, and its guest said ready (no word at all: the backend cannot tell, so ready). */
const isReady = (g: ObservedGuest) =>
  g.role === 'runner' && g.state === 'running' && (g.condition ?? 'ready') === 'ready';

/** "2 runner(s): 1 booting, 1 claimed by other jobs" — why no runner of the pool is free. */
function poolState(runners: ObservedGuest[], held: ReadonlySet<string>): string {
  const count = (f: (g: ObservedGuest) => boolean) => runners.filter(f).length;
  const parts = [
    [count((g) => held.has(g.name)), 'claimed by other jobs'],
    [count((g) => !held.has(g.name) && g.state === 'running' && g.condition === 'booting'), 'booting'],
    [count((g) => !held.has(g.name) && g.state === 'running' && g.condition === 'busy'), 'busy'],
    [count((g) => !held.has(g.name) && g.state !== 'running'), 'not running'],
  ] as const;
  const said = parts.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}`);
  return `${runners.length} runner(s)${said.length > 0 ? `: ${said.join(', ')}` : ''}`;
}

/** One look at the pool: the job's own claim (prepare is retried), else a fresh one, else why not. */
async function tryClaimOnce(
  deps: DriverDeps,
  job: JobEnv,
  profile: CompiledProfile,
): Promise<{ claim: Claim } | { why: string }> {
  const lookedAt = deps.clock().getTime();
  const observed = await deps.hypervisor.observe();
  const guests = new Map(observed.guests.map((g) => [g.name, g]));
  const claims = await deps.claims.list();
  // prepare is retried by gitlab-runner: a claim this job already holds is reused.
  const own = claims.find((c) => c.job === job.job && guests.get(c.runner)?.meta.createdAt === c.guestCreatedAt);
  if (own) return { claim: own };
  // Claims whose guest is gone or was recreated under the same name hold nothing. Only claims
  // made before this look are judged: a newer one may be on a guest created since.
  for (const c of claims)
    if (guests.get(c.runner)?.meta.createdAt !== c.guestCreatedAt && !(Date.parse(c.claimedAt) >= lookedAt))
      await deps.claims.release(c.runner, c.job);
  const held = new Set((await deps.claims.list()).map((c) => c.runner));
  const pool = observed.guests.filter((g) => g.profile === profile.name && g.role === 'runner');
  const ready = pool.filter((g) => isReady(g) && !held.has(g.name)).sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
  for (const g of ready) {
    const candidate: Claim = {
      runner: g.name,
      profile: profile.name,
      job: job.job,
      claimedAt: deps.clock().toISOString(),
      guestCreatedAt: g.meta.createdAt,
    };
    if (await deps.claims.tryClaim(candidate)) return { claim: candidate };
    held.add(g.name);
  }
  return { why: poolState(pool, held) };
}

/**
 * `prepare` stage: atomically claims one ready runner of the job's profile (never a booting or
 * busy one), waiting up to `claimWaitMs` for one to come free, then waits for its agent.
 */
export async function prepareStage(deps: DriverDeps, job: JobEnv): Promise<Claim> {
  if (!job.job) throw new SystemFailure('CUSTOM_ENV_CI_JOB_ID is not set');
  const profile = profileFor(deps.view, job.image);
  const started = deps.clock().getTime();
  const every = deps.progressEveryMs ?? PROGRESS_EVERY_MS;
  let nextProgress = started + every;
  let claim: Claim | undefined;
  for (;;) {
    const look = await tryClaimOnce(deps, job, profile);
    if ('claim' in look) {
      claim = look.claim;
      break;
    }
    const now = deps.clock().getTime();
    const waited = Math.round((now - started) / 1000);
    if (deps.signal?.aborted)
      throw new SystemFailure(`cancelled while waiting for a free runner of profile ${profile.name} (${look.why})`);
    if (now - started >= deps.claimWaitMs)
      throw new SystemFailure(
        deps.claimWaitMs === 0
          ? `no free runner of profile ${profile.name}: ${look.why} (ci.claimWait is 0: no wait)`
          : `no free runner of profile ${profile.name} after waiting ${waited}s (ci.claimWait): ${look.why}`,
      );
    if (now >= nextProgress) {
      deps.say(
        `corral: waiting for a free runner of profile ${profile.name}: ${look.why} (waited ${waited}s of ${Math.round(deps.claimWaitMs / 1000)}s)`,
      );
      nextProgress = now + every;
    }
    await abortable(
      deps.sleep(Math.min(deps.claimPollMs ?? CLAIM_POLL_MS, started + deps.claimWaitMs - now)),
      deps.signal,
    );
  }
  deps.say(`corral: job ${job.job} runs on ${claim.runner} (profile ${profile.name}, host ${deps.host})`);
  if (!deps.hypervisor.canRunScripts) throw new SystemFailure(`the ${deps.hypervisor.kind} backend cannot run scripts`);
  const deadline = deps.clock().getTime() + deps.agentWaitMs;
  for (;;) {
    let up: boolean;
    try {
      up = await deps.hypervisor.canRunScripts(claim.runner);
    } catch (error) {
      throw new SystemFailure(`${claim.runner}: ${(error as Error).message}`);
    }
    if (up) break;
    if (deps.clock().getTime() > deadline)
      throw new SystemFailure(`${claim.runner}: its guest agent did not answer within ${deps.agentWaitMs / 1000}s`);
    if (deps.signal?.aborted) throw new SystemFailure(`cancelled while waiting for ${claim.runner}'s guest agent`);
    await abortable(deps.sleep(500), deps.signal);
  }
  return claim;
}

/** A sleep that ends early when the job is cancelled. */
function abortable(sleep: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return sleep;
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener('abort', done);
      resolve();
    };
    signal.addEventListener('abort', done, { once: true });
    void sleep.then(done);
  });
}

/** The job's claim, on the very guest it was made on (a stale claim's runner may have been replaced). */
async function claimOf(deps: DriverDeps, job: JobEnv): Promise<Claim> {
  const claim = job.job ? await deps.claims.forJob(job.job) : undefined;
  if (!claim) throw new SystemFailure(`job ${job.job || '(no CI_JOB_ID)'} holds no corral runner (did prepare run?)`);
  const guest = (await deps.hypervisor.observe()).guests.find((g) => g.name === claim.runner);
  if (guest?.meta.createdAt !== claim.guestCreatedAt)
    throw new SystemFailure(
      `${claim.runner}, claimed by job ${claim.job} at ${claim.claimedAt}, is gone or was replaced (a claim older than ci.maxJobDuration is stale)`,
    );
  return claim;
}

/**
 * `run <script> <sub-stage>`: the script's exit status is the result. Non-zero: its own code goes
 * into $BUILD_EXIT_CODE_FILE and the stage exits with $BUILD_FAILURE_EXIT_CODE.
 */
export async function runStage(
  deps: DriverDeps,
  job: JobEnv,
  scriptPath: string,
  subStage: string,
  out: (chunk: Buffer) => void,
): Promise<number> {
  const claim = await claimOf(deps, job);
  let script: string;
  try {
    script = await readFile(scriptPath, 'utf8');
  } catch (error) {
    throw new SystemFailure(
      `cannot read the ${subStage} script ${scriptPath}: ${(error as NodeJS.ErrnoException).code}`,
    );
  }
  if (!deps.hypervisor.runScript) throw new SystemFailure(`the ${deps.hypervisor.kind} backend cannot run scripts`);
  let status: number;
  try {
    status = await deps.hypervisor.runScript(claim.runner, script, out, {
      ...(deps.signal ? { signal: deps.signal } : {}),
      ...(deps.killGraceMs !== undefined ? { killGraceMs: deps.killGraceMs } : {}),
    });
  } catch (error) {
    throw new SystemFailure(`${claim.runner}: ${subStage} could not run: ${(error as Error).message}`);
  }
  if (deps.signal?.aborted)
    deps.say(
      `corral: job ${job.job} cancelled: stopped ${subStage} in ${claim.runner} (it ended with status ${status})`,
    );
  if (status === 0) return 0;
  if (job.buildExitCodeFile) await writeFile(job.buildExitCodeFile, `${status}`);
  return job.buildFailureExitCode;
}

/**
 * `cleanup`: the guest goes (the reconciler makes a fresh one), then the claim. A guest that was
 * replaced meanwhile (the claim had gone stale) is not this job's: only the claim goes.
 */
export async function cleanupStage(deps: DriverDeps, job: JobEnv): Promise<string | undefined> {
  const claim = job.job ? await deps.claims.forJob(job.job) : undefined;
  if (!claim) return undefined;
  const guest = (await deps.hypervisor.observe()).guests.find((g) => g.name === claim.runner);
  if (guest && guest.meta.createdAt === claim.guestCreatedAt) {
    await deps.hypervisor.destroy(claim.runner);
    deps.say(`corral: destroyed ${claim.runner}; the reconciler replaces it`);
  } else deps.say(`corral: ${claim.runner} of job ${job.job} was already gone or replaced`);
  await deps.claims.release(claim.runner, claim.job);
  return claim.runner;
}
