/**
 * What a pass asks of the CI systems, whichever a profile uses (`ci:` in profile.yaml):
 * registration material for a new runner's seed, deregistration after a destroy, and a sweep of
 * this host's registrations whose guest is gone. GitHub clients are made on first use (octokit is
 * not loaded for hosts that do not use it) and kept for the life of the process.
 */
import type { Logger } from 'pino';
import type { CiSpec, CompiledProfile } from '../sources/view.js';
import type { ClientTuning, GitHubApi, Registration } from './github/api.js';
import { ForgeError } from './github/forge-error.js';
import {
  archLabel,
  deregisterJitRunner,
  orphanedRegistrations,
  registerJitRunner,
  registrationName,
  runnerLabels,
} from './github/registrar.js';
import { runDeregisterHook, runRegisterHook } from './hook/run-hook.js';

export interface RunnerCiDeps {
  /** `<runner>@<host>` on GitHub; unique across hosts sharing a scope. */
  host: string;
  log: Logger;
  clock: () => Date;
  env: NodeJS.ProcessEnv;
  arch?: string;
  tuning?: Partial<ClientTuning>;
}

/** Per GitHub scope: what the last sweep saw (for `status`). */
export interface ScopeReport {
  profiles: string[];
  scope: string;
  checkedAt: string;
  /** This host's registrations, orphans already deleted. */
  registrations: Registration[];
  deletedOrphans: string[];
  error?: string;
}

export interface SweepResult {
  scopes: ScopeReport[];
  /** Profiles whose CI system failed during the sweep, with the failure. */
  failures: { profile: string; error: ForgeError }[];
}

export interface RunnerCi {
  /** Files for the runner's seed under `corral/` ({} for a profile without CI). Throws ForgeError. */
  register(runner: string, profile: CompiledProfile): Promise<Record<string, string>>;
  /** After the runner's guest is gone. Throws ForgeError; the next sweep retries what is left. */
  deregister(runner: string, profile: CompiledProfile): Promise<void>;
  /** Deletes this host's GitHub registrations whose runner is not in `alive`. */
  sweep(profiles: readonly CompiledProfile[], alive: ReadonlySet<string>): Promise<SweepResult>;
}

type GitHubSpecOf = Extract<CiSpec, { kind: 'github' }>;

export function createRunnerCi(deps: RunnerCiDeps): RunnerCi {
  const clients = new Map<string, Promise<GitHubApi>>();
  const arch = archLabel(deps.arch ?? process.arch);
  const keyOf = (spec: GitHubSpecOf) => JSON.stringify([spec.api, spec.scope, spec.auth]);
  const github = (spec: GitHubSpecOf): Promise<GitHubApi> => {
    const key = keyOf(spec);
    let client = clients.get(key);
    if (!client) {
      client = import('./github/api.js').then(({ createGitHubApi }) =>
        createGitHubApi(spec, { log: deps.log, clock: deps.clock, ...(deps.tuning ? { tuning: deps.tuning } : {}) }),
      );
      // A config error (unreadable token file) must be retried once the operator fixes it.
      client.catch(() => clients.delete(key));
      clients.set(key, client);
    }
    return client;
  };
  const hookContext = (runner: string, profile: CompiledProfile, timeoutSeconds: number) => ({
    runner,
    profile: profile.name,
    host: deps.host,
    cwd: profile.dir,
    timeoutSeconds,
    env: deps.env,
  });

  return {
    async register(runner, profile) {
      const ci = profile.ci;
      if (ci?.kind === 'github') {
        const api = await github(ci);
        const { seedFiles, registration } = await registerJitRunner(api, {
          name: registrationName(runner, deps.host),
          runnerGroupId: ci.runnerGroupId,
          labels: runnerLabels(profile.name, arch, ci.labels),
        });
        deps.log.info({ runner, registration: registration.name, id: registration.id }, 'registered with GitHub');
        return seedFiles;
      }
      if (ci?.kind === 'hook' && ci.register) {
        const files = await runRegisterHook(ci.register, hookContext(runner, profile, ci.timeoutSeconds));
        deps.log.info({ runner, seedFiles: Object.keys(files) }, 'register hook done');
        return files;
      }
      return {};
    },

    async deregister(runner, profile) {
      const ci = profile.ci;
      if (ci?.kind === 'github') {
        const deleted = await deregisterJitRunner(await github(ci), registrationName(runner, deps.host));
        if (deleted > 0) deps.log.info({ runner }, 'deregistered from GitHub');
      } else if (ci?.kind === 'hook' && ci.deregister) {
        await runDeregisterHook(ci.deregister, hookContext(runner, profile, ci.timeoutSeconds));
      }
    },

    async sweep(profiles, alive) {
      const byScope = new Map<string, { spec: GitHubSpecOf; profiles: string[] }>();
      for (const p of profiles) {
        if (p.ci?.kind !== 'github') continue;
        const key = keyOf(p.ci);
        const entry = byScope.get(key) ?? { spec: p.ci, profiles: [] };
        entry.profiles.push(p.name);
        byScope.set(key, entry);
      }
      const result: SweepResult = { scopes: [], failures: [] };
      await Promise.all(
        [...byScope.values()].map(async ({ spec, profiles: names }) => {
          const scope = spec.scope.kind === 'repo' ? `${spec.scope.owner}/${spec.scope.repo}` : spec.scope.org;
          const report: ScopeReport = {
            profiles: names,
            scope,
            checkedAt: deps.clock().toISOString(),
            registrations: [],
            deletedOrphans: [],
          };
          try {
            const api = await github(spec);
            const mine = (await api.listRunners()).filter((r) => r.name.endsWith(`@${deps.host}`));
            const orphans = orphanedRegistrations(mine, deps.host, alive);
            for (const o of orphans) {
              await api.deleteRunner(o.id);
              report.deletedOrphans.push(o.name);
            }
            if (orphans.length > 0)
              deps.log.info({ scope, deleted: report.deletedOrphans }, 'deleted registrations whose guest is gone');
            const gone = new Set(orphans.map((o) => o.id));
            report.registrations = mine.filter((r) => !gone.has(r.id));
          } catch (error) {
            const forge = error instanceof ForgeError ? error : new ForgeError('GitHub', (error as Error).message);
            report.error = forge.message;
            for (const profile of names) result.failures.push({ profile, error: forge });
          }
          result.scopes.push(report);
        }),
      );
      return result;
    },
  };
}
