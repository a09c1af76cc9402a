import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanupStage,
  configStage,
  prepareStage,
  readJobEnv,
  runStage,
  SystemFailure,
  type DriverDeps,
  type JobEnv,
} from '../../ci/gitlab/driver.js';
import { readCurrentView } from '../../state/compiled-store.js';
import { formatProblem } from '../../errors.js';
import { packageRoot } from '../../util/package-root.js';
import { EXIT, type Command, type CommandContext } from '../command.js';
import { openRuntime, previewView } from '../../reconcile/runtime.js';

const STAGES = ['config', 'prepare', 'run', 'cleanup'] as const;

export const gitlabCommand: Command = {
  name: 'gitlab',
  summary: "gitlab-runner's custom executor driver: config | prepare | run <script> <sub-stage> | cleanup.",
  usage: 'corral gitlab config|prepare|run <script> <sub-stage>|cleanup [--config FILE]',
  optionsHelp: `  Called by gitlab-runner ([runners.custom] in its config.toml; see the README). The job's
  "image:" names a corral profile with "ci: { gitlab: {} }"; prepare claims one of its ready
  runners, run executes each script inside it (QEMU guest agent), cleanup destroys it.
  With no free ready runner, prepare waits up to ci.claimWait (host config, default 10m), printing
  progress. On SIGTERM (job cancelled or timed out) run stops the script's process group in the
  guest (TERM, then KILL) and exits $BUILD_FAILURE_EXIT_CODE with the script's status (143 when
  TERM ended it) in $BUILD_EXIT_CODE_FILE.
  Exit codes follow gitlab-runner: $BUILD_FAILURE_EXIT_CODE for a failed script (its own code in
  $BUILD_EXIT_CODE_FILE), $SYSTEM_FAILURE_EXIT_CODE for anything else that went wrong.`,
  options: {},
  // config|prepare|cleanup, or run <script> <sub-stage>: checked below.
  positionals: 3,
  async run(ctx) {
    const [stage, ...rest] = ctx.positionals;
    if (!STAGES.includes(stage as (typeof STAGES)[number])) {
      ctx.io.err(`corral gitlab: the stage must be one of ${STAGES.join(', ')}; see "corral gitlab --help"\n`);
      return EXIT.error;
    }
    if (stage === 'run' ? rest.length !== 2 : rest.length !== 0) {
      ctx.io.err(`corral gitlab ${stage}: ${stage === 'run' ? 'needs <script> <sub-stage>' : 'takes no arguments'}\n`);
      return EXIT.error;
    }
    let job: JobEnv;
    try {
      job = readJobEnv(ctx.env);
    } catch (error) {
      ctx.io.err(`corral gitlab ${stage}: ${(error as Error).message}\n`);
      return EXIT.error;
    }
    // gitlab-runner sends SIGTERM (to the process group) when the job is cancelled or times out:
    // prepare stops waiting, run stops the script in the guest and reports how it ended.
    const stop = new AbortController();
    if (stage === 'prepare' || stage === 'run')
      ctx.signals.onStop(() => {
        if (!stop.signal.aborted) ctx.io.err(`corral gitlab ${stage}: stopping (job cancelled or timed out)\n`);
        stop.abort();
      });
    try {
      const deps = { ...(await driverDeps(ctx)), signal: stop.signal };
      switch (stage) {
        case 'config':
          ctx.io.out(`${JSON.stringify(configStage(deps, job))}\n`);
          return EXIT.ok;
        case 'prepare':
          await prepareStage(deps, job);
          return EXIT.ok;
        case 'run': {
          const write = ctx.io.write ?? ((chunk: Buffer) => ctx.io.out(chunk.toString('utf8')));
          return await runStage(deps, job, rest[0] as string, rest[1] as string, write);
        }
        default:
          await cleanupStage(deps, job);
          return EXIT.ok;
      }
    } catch (error) {
      // Whatever failed here is the infrastructure's fault, never the job's.
      const message = error instanceof SystemFailure ? error.message : `internal error: ${(error as Error).message}`;
      ctx.io.err(`corral gitlab ${stage}: ${message}\n`);
      return job.systemFailureExitCode;
    }
  },
};

async function driverDeps(ctx: CommandContext): Promise<DriverDeps> {
  const view =
    (await readCurrentView(ctx.config.stateDir)) ??
    (await previewView({ ...ctx, warn: (p) => ctx.io.err(`warning: ${formatProblem(p)}\n`) })).view;
  const runtime = await openRuntime(ctx);
  return {
    view,
    hypervisor: runtime.hypervisor,
    claims: runtime.claims,
    host: ctx.config.ci.host,
    version: (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version,
    clock: ctx.now,
    sleep: runtime.sleep,
    say: (line) => ctx.io.err(`${line}\n`),
    agentWaitMs: Number(ctx.env.CORRAL_GITLAB_AGENT_WAIT_SECONDS ?? 120) * 1000,
    claimWaitMs: ctx.config.ci.claimWaitSeconds * 1000,
  };
}
