/**
 * Each runner's CI state for `status`, from what corral already knows: the last pass's view of
 * GitHub (ci-state.json), the GitLab claims and the CI back-off. `status` never calls a CI system.
 */
import type { CiOutage } from '../plan/types.js';
import type { ObservedGuest } from '../hypervisor/hypervisor.js';
import type { CompiledProfile } from '../sources/view.js';
import type { CiState } from '../state/ci-state.js';
import type { Claim } from '../state/claims.js';

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
}): { runners: RunnerCiState[]; orphans: string[] } {
  const { profile, runners, host, ciState, claims } = input;
  const ci = profile.ci;
  const names = runners.map((r) => r.name).sort();
  if (ci?.kind === 'gitlab') {
    return {
      runners: names.map((name) => {
        const runner = runners.find((r) => r.name === name);
        const claim = claims.find((c) => c.runner === name && c.guestCreatedAt === runner?.meta.createdAt);
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
