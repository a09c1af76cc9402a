/**
 * Each runner's CI state for `status` and the HTTP console, from what corral already knows: the last pass's view of
 * GitHub (ci-state.json), the GitLab claims and the CI back-off. `status` never calls a CI system.
 */
import type { CiOutage } from '../plan/types.js';
import type { ObservedGuest } from '../hypervisor/hypervisor.js';
import type { CompiledProfile } from '../sources/view.js';
import type { CiState } from './ci-state.js';
import { ClaimStore, type Claim } from '../state/claims.js';
import { readCiState } from './ci-state.js';
import { CiOutageStore } from '../state/ci-outages.js';
import { formatOutage } from '../plan/plan.js';
import type { HostConfig } from '../config/host-config.js';

export interface RunnerCiState {
  name: string;
  /** registered (online|offline), busy, idle, not registered, failing: <reason>, … */
  state: string;
}

export function runnerCiStates(input: {
  profile: CompiledProfile;
  runners: ObservedGuest[];
  host: string;
  ciState: CiState | undefined;
  claims: Claim[];
  outage: CiOutage | undefined;
  /** Claims made before this ISO time are stale (older than ci.maxJobDuration); absent: none is. */
  staleBefore?: string;
}): { runners: RunnerCiState[]; orphans: string[] } {
  const { profile, runners, host, ciState, claims } = input;
  const ci = profile.ci;
  const names = runners.map((r) => r.name).sort();
  if (ci?.kind === 'gitlab') {
    return {
      runners: names.map((name) => {
        const runner = runners.find((r) => r.name === name);
        const claim = claims.find((c) => c.runner === name && c.guestCreatedAt === runner?.meta.createdAt);
        if (claim && input.staleBefore && Date.parse(claim.claimedAt) < Date.parse(input.staleBefore))
          return {
            name,
            state: `stale claim (job ${claim.job} at ${claim.claimedAt}: no cleanup within ci.maxJobDuration; the next pass replaces it)`,
          };
        if (claim) return { name, state: `busy (claimed by job ${claim.job} at ${claim.claimedAt})` };
        return { name, state: runner?.state === 'running' ? 'idle' : (runner?.state ?? 'gone') };
      }),
      orphans: [],
    };
  }
  if (ci?.kind === 'github') {
    const scope = ciState?.scopes.find((s) => s.profiles.includes(profile.name));
    const byName = new Map((scope?.registrations ?? []).map((r) => [r.name, r]));
    const failing = scope?.error ? `failing: ${scope.error}` : undefined;
    const orphans = (scope?.registrations ?? [])
      .map((r) => r.name)
      .filter((n) => n.endsWith(`@${host}`))
      .filter((n) => n.slice(0, -host.length - 1).includes(`-runner-${profile.name}.`))
      .filter((n) => !names.includes(n.slice(0, -host.length - 1)));
    return {
      runners: names.map((name) => {
        const r = byName.get(`${name}@${host}`);
        if (r) return { name, state: `registered (${r.busy ? 'busy' : r.status === 'online' ? 'idle' : r.status})` };
        return {
          name,
          state:
            failing ??
            (scope
              ? 'not registered (its job is done, or it was never registered)'
              : 'unknown (no pass has looked yet)'),
        };
      }),
      orphans,
    };
  }
  return {
    runners: names.map((name) => ({ name, state: input.outage ? 'failing: register hook' : 'registered (hook)' })),
    orphans: [],
  };
}

/** What corral already knows about the CI systems, read once per `status` or console snapshot. */
export interface CiFacts {
  /** This host's name in registrations (`<runner>@<host>`). */
  host: string;
  ciState: CiState | undefined;
  claims: Claim[];
  outages: Record<string, CiOutage>;
  /** Claims made before this ISO time are stale (now − ci.maxJobDuration). */
  staleBefore?: string;
}

export interface ProfileCiSummary {
  system: NonNullable<CompiledProfile['ci']>['kind'];
  /** The CI back-off the profile is under (runner creation waits), or null. */
  failing: string | null;
  /** Runners a CI job holds now; null when the system cannot tell (hooks, no GitHub sweep yet). */
  busy: number | null;
  runners: RunnerCiState[];
  orphans: string[];
}

/**
 * A profile's CI summary, shared by `corral status` and the HTTP console so both say the same:
 * null for a profile without `ci:`.
 */
export function profileCiSummary(
  profile: CompiledProfile,
  runners: ObservedGuest[],
  facts: CiFacts,
): ProfileCiSummary | null {
  if (!profile.ci) return null;
  const outage = facts.outages[profile.name];
  const states = runnerCiStates({
    profile,
    runners,
    host: facts.host,
    ciState: facts.ciState,
    claims: facts.claims,
    outage,
    ...(facts.staleBefore ? { staleBefore: facts.staleBefore } : {}),
  });
  const known =
    profile.ci.kind === 'gitlab' ||
    (profile.ci.kind === 'github' && !!facts.ciState?.scopes.some((s) => s.profiles.includes(profile.name)));
  return {
    system: profile.ci.kind,
    failing: outage ? formatOutage(outage) : null,
    busy: known ? states.runners.filter(isBusy).length : null,
    ...states,
  };
}

/** GitLab's `busy (claimed by job …)` and GitHub's `registered (busy)`. */
export function isBusy(runner: RunnerCiState): boolean {
  return runner.state.startsWith('busy') || runner.state === 'registered (busy)';
}

/** Reads the CI facts from the state dir (never from a CI system). */
export async function readCiFacts(config: HostConfig, now = new Date()): Promise<CiFacts> {
  const [ciState, claims, outages] = await Promise.all([
    readCiState(config.stateDir),
    new ClaimStore(config.stateDir).list(),
    new CiOutageStore(config.stateDir, config.ci.backoff).read(),
  ]);
  return {
    host: config.ci.host,
    ciState,
    claims,
    outages,
    staleBefore: new Date(now.getTime() - config.ci.maxJobSeconds * 1000).toISOString(),
  };
}
