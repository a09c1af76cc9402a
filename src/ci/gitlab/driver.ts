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
}

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

const isReady = (g: ObservedGuest) => g.role === 'runner' && g.state === 'running';

/** `prepare` stage: atomically claims one ready runner of the job's profile and waits for its agent. */
export async function prepareStage(deps: DriverDeps, job: JobEnv): Promise<Claim> {
  if (!job.job) throw new SystemFailure('CUSTOM_ENV_CI_JOB_ID is not set');
  const profile = profileFor(deps.view, job.image);
  const observed = await deps.hypervisor.observe();
  const guests = new Map(observed.guests.map((g) => [g.name, g]));
  const claims = await deps.claims.list();
  // prepare is retried by gitlab-runner: a claim this job already holds is reused.
  let claim = claims.find((c) => c.job === job.job && guests.get(c.runner)?.meta.createdAt === c.guestCreatedAt);
  if (!claim) {
    // Claims whose guest is gone or was recreated under the same name are stale.
    for (const c of claims)
      if (guests.get(c.runner)?.meta.createdAt !== c.guestCreatedAt) await deps.claims.release(c.runner);
    const held = new Set((await deps.claims.list()).map((c) => c.runner));
    const ready = observed.guests
      .filter((g) => g.profile === profile.name && isReady(g) && !held.has(g.name))
      .sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
    for (const g of ready) {
      const candidate: Claim = {
        runner: g.name,
        profile: profile.name,
        job: job.job,
        claimedAt: deps.clock().toISOString(),
        guestCreatedAt: g.meta.createdAt,
      };
      if (await deps.claims.tryClaim(candidate)) {
        claim = candidate;
        break;
      }
    }
    if (!claim) {
      const all = observed.guests.filter((g) => g.profile === profile.name && g.role === 'runner');
      throw new SystemFailure(
        `no free runner of profile ${profile.name}: ${all.length} runner(s), ${all.filter(isReady).length} running, all held by other jobs or not up yet`,
      );
    }
  }
  deps.say(`corral: job ${job.job} runs on ${claim.runner} (profile ${profile.name}, host ${deps.host})`);
  if (!deps.hypervisor.canRunScripts) throw new SystemFailure(`the ${deps.hypervisor.kind} backend cannot run scripts`);
  const deadline = deps.clock().getTime() + deps.agentWaitMs;
  while (!(await deps.hypervisor.canRunScripts(claim.runner))) {
    if (deps.clock().getTime() > deadline)
      throw new SystemFailure(`${claim.runner}: its guest agent did not answer within ${deps.agentWaitMs / 1000}s`);
    await deps.sleep(500);
  }
  return claim;
}

async function claimOf(deps: DriverDeps, job: JobEnv): Promise<Claim> {
  const claim = job.job ? await deps.claims.forJob(job.job) : undefined;
  if (!claim) throw new SystemFailure(`job ${job.job || '(no CI_JOB_ID)'} holds no corral runner (did prepare run?)`);
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
    status = await deps.hypervisor.runScript(claim.runner, script, out);
  } catch (error) {
    throw new SystemFailure(`${claim.runner}: ${subStage} could not run: ${(error as Error).message}`);
  }
  if (status === 0) return 0;
  if (job.buildExitCodeFile) await writeFile(job.buildExitCodeFile, `${status}`);
  return job.buildFailureExitCode;
}

/** `cleanup`: the guest goes (the reconciler makes a fresh one), then the claim. */
export async function cleanupStage(deps: DriverDeps, job: JobEnv): Promise<string | undefined> {
  const claim = job.job ? await deps.claims.forJob(job.job) : undefined;
  if (!claim) return undefined;
  await deps.hypervisor.destroy(claim.runner);
  await deps.claims.release(claim.runner);
  deps.say(`corral: destroyed ${claim.runner}; the reconciler replaces it`);
  return claim.runner;
}
