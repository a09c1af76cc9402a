/**
 * The few GitHub REST endpoints corral uses, through @octokit/rest with the retry and throttling
 * plugins. Every failure comes out as a ForgeError (transient); secrets (the token, the App key,
 * the encoded JIT config) are never logged or put into an error message.
 */
import { readFile } from 'node:fs/promises';
import { Octokit } from '@octokit/rest';
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { createAppAuth } from '@octokit/auth-app';
import Bottleneck from 'bottleneck';
import type { Logger } from 'pino';
import { ConfigError } from '../../errors.js';
import { classifyGitHubError, ForgeError } from './forge-error.js';

export { DEFAULT_GITHUB_API } from '../../sources/ci-defaults.js';

export type GitHubScope = { kind: 'repo'; owner: string; repo: string } | { kind: 'org'; org: string };

export type GitHubAuth =
  { kind: 'token'; tokenFile: string } | { kind: 'app'; appId: number; installationId: number; privateKeyFile: string };

export interface GitHubSpec {
  api: string;
  scope: GitHubScope;
  runnerGroupId: number;
  /** The profile's own labels; corral adds self-hosted, the architecture and corral-<profile>. */
  labels: string[];
  auth: GitHubAuth;
}

export interface Registration {
  id: number;
  name: string;
  status: string;
  busy: boolean;
}

export interface JitConfig {
  runner: Registration;
  /** The secret the guest's runner starts with; goes onto the seed and nowhere else. */
  encodedJitConfig: string;
}

export interface GitHubApi {
  generateJitConfig(req: { name: string; runnerGroupId: number; labels: string[] }): Promise<JitConfig>;
  /** Every self-hosted runner of the scope, following `Link` pagination (or only those with this name). */
  listRunners(name?: string): Promise<Registration[]>;
  deleteRunner(id: number): Promise<void>;
  /** `owner/repo` or `org`, for messages. */
  readonly scopeLabel: string;
}

export interface ClientTuning {
  /** Per request; a hung connection is a transient failure, not a hung pass. */
  timeoutMs: number;
  /** Retries of a 5xx inside one call (the plugin waits retryCount² × base between them). */
  retries: number;
  retryBaseMs: number;
  /** Spacing of writes GitHub asks integrators to keep (secondary rate limits); 0 in tests. */
  minWriteIntervalMs: number;
  /** Waits for a rate limit inside one call only when it ends this soon; otherwise the pass backs off. */
  maxInlineRateLimitWaitSeconds: number;
}

export const DEFAULT_TUNING: ClientTuning = {
  timeoutMs: 20_000,
  retries: 2,
  retryBaseMs: 1000,
  minWriteIntervalMs: 1000,
  maxInlineRateLimitWaitSeconds: 5,
};

const RestWithPlugins = Octokit.plugin(retry, throttling);

export async function createGitHubApi(
  spec: GitHubSpec,
  deps: { log: Logger; clock: () => Date; tuning?: Partial<ClientTuning> },
): Promise<GitHubApi> {
  const tuning = { ...DEFAULT_TUNING, ...deps.tuning };
  const log = deps.log.child({ ci: 'github' });
  const auth = await authOptions(spec.auth);
  const timedFetch: typeof fetch = (url, init) =>
    fetch(url, { ...init, signal: AbortSignal.timeout(tuning.timeoutMs) });
  const inline = (retryAfter: number, _options: unknown, _octokit: unknown, retryCount: number) =>
    retryCount === 0 && retryAfter <= tuning.maxInlineRateLimitWaitSeconds;
  const octokit = new RestWithPlugins({
    ...auth,
    baseUrl: spec.api.replace(/\/+$/, ''),
    userAgent: 'corral',
    // Not request.retries: the retry plugin would then repeat even the statuses it must not (a 409).
    request: { fetch: timedFetch },
    // 409 is an answer (a name conflict corral resolves), not a hiccup worth repeating.
    retry: {
      retries: tuning.retries,
      retryAfterBaseValue: tuning.retryBaseMs,
      doNotRetry: [400, 401, 403, 404, 409, 410, 422, 451],
    },
    throttle: {
      onRateLimit: inline,
      onSecondaryRateLimit: inline,
      ...(tuning.minWriteIntervalMs === DEFAULT_TUNING.minWriteIntervalMs
        ? {}
        : { write: new Bottleneck.Group({ maxConcurrent: 1, minTime: tuning.minWriteIntervalMs }) }),
    },
    // octokit's own logging would print request details; ours says only what is safe.
    log: {
      debug: () => undefined,
      info: () => undefined,
      warn: (message: string) => log.debug({ octokit: message.split('\n')[0] }, 'octokit warning'),
      error: () => undefined,
    },
  });
  const scope = spec.scope;
  const scopeLabel = scope.kind === 'repo' ? `${scope.owner}/${scope.repo}` : scope.org;
  const call = async <T>(what: () => Promise<T>): Promise<T> => {
    try {
      return await what();
    } catch (error) {
      throw classifyGitHubError(error, deps.clock());
    }
  };
  return {
    scopeLabel,
    generateJitConfig: (req) =>
      call(async () => {
        const body = { name: req.name, runner_group_id: req.runnerGroupId, labels: req.labels };
        const res =
          scope.kind === 'repo'
            ? await octokit.rest.actions.generateRunnerJitconfigForRepo({
                owner: scope.owner,
                repo: scope.repo,
                ...body,
              })
            : await octokit.rest.actions.generateRunnerJitconfigForOrg({ org: scope.org, ...body });
        const data = res.data as unknown;
        if (!isJitResponse(data)) throw new ForgeError('GitHub', 'unexpected generate-jitconfig response');
        return { runner: registration(data.runner), encodedJitConfig: data.encoded_jit_config };
      }),
    listRunners: (name) =>
      call(async () => {
        const params = { per_page: 100, ...(name ? { name } : {}) };
        const runners: unknown[] =
          scope.kind === 'repo'
            ? await octokit.paginate(octokit.rest.actions.listSelfHostedRunnersForRepo, {
                owner: scope.owner,
                repo: scope.repo,
                ...params,
              })
            : await octokit.paginate(octokit.rest.actions.listSelfHostedRunnersForOrg, { org: scope.org, ...params });
        if (!Array.isArray(runners) || !runners.every(isRunner))
          throw new ForgeError('GitHub', 'unexpected runners list response');
        return runners.map(registration);
      }),
    deleteRunner: (id) =>
      call(async () => {
        if (scope.kind === 'repo')
          await octokit.rest.actions.deleteSelfHostedRunnerFromRepo({
            owner: scope.owner,
            repo: scope.repo,
            runner_id: id,
          });
        else await octokit.rest.actions.deleteSelfHostedRunnerFromOrg({ org: scope.org, runner_id: id });
      }),
  };
}

async function authOptions(auth: GitHubAuth): Promise<Record<string, unknown>> {
  const read = async (file: string, what: string) => {
    try {
      return (await readFile(file, 'utf8')).trim();
    } catch (error) {
      throw new ConfigError(`cannot read the GitHub ${what} ${file}: ${(error as NodeJS.ErrnoException).code}`);
    }
  };
  if (auth.kind === 'token') {
    const token = await read(auth.tokenFile, 'token file');
    if (!token) throw new ConfigError(`the GitHub token file ${auth.tokenFile} is empty`);
    return { auth: token };
  }
  const privateKey = await read(auth.privateKeyFile, 'App private key file');
  return {
    authStrategy: createAppAuth,
    auth: { appId: auth.appId, installationId: auth.installationId, privateKey },
  };
}

interface RawRunner {
  id: number;
  name: string;
  status?: unknown;
  busy?: unknown;
}

function isRunner(value: unknown): value is RawRunner {
  const r = value as RawRunner | null;
  return typeof r === 'object' && r !== null && typeof r.id === 'number' && typeof r.name === 'string';
}

function isJitResponse(value: unknown): value is { runner: RawRunner; encoded_jit_config: string } {
  const v = value as { runner?: unknown; encoded_jit_config?: unknown } | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    isRunner(v.runner) &&
    typeof v.encoded_jit_config === 'string' &&
    v.encoded_jit_config.length > 0
  );
}

function registration(r: RawRunner): Registration {
  return {
    id: r.id,
    name: r.name,
    status: typeof r.status === 'string' ? r.status : 'unknown',
    busy: r.busy === true,
  };
}
