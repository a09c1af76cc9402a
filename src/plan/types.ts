import type { CompiledProfile } from '../sources/view.js';
import type { Observation } from '../hypervisor/hypervisor.js';

export interface BackoffEntry {
  failures: number;
  /** ISO time before which no new build of the profile starts. */
  until: string;
  lastError: string;
  /** The last failure was the host's (a HostError), not a build's. */
  host?: true;
}

export interface Policy {
  prefix: string;
  keepTemplates: number;
  /** Lock token of the process that owns in-flight builds; rebuilds owned by anyone else are orphans. */
  ownerToken?: string;
  /**
   * Rebuilds the owner is waiting on right now, when the planner runs inside the owner. A rebuild
   * carrying our token but not in this set (its failed destroy left it behind) is an orphan too.
   */
  inFlight?: ReadonlySet<string>;
  backoff: Record<string, BackoffEntry>;
  /** At most this fraction of a profile's runners is being replaced at once (at least one). */
  surgeFraction: number;
}

export interface PlanInput {
  profiles: CompiledProfile[];
  observed: Observation;
  now: Date;
  policy: Policy;
}

interface Base {
  guest: string;
  profile: string;
  reason: string;
}

export type Action =
  | (Base & { action: 'build'; gen: string; template: string; inputsHash: string })
  | (Base & { action: 'promote'; template: string })
  | (Base & { action: 'discard' })
  | (Base & { action: 'create-runner'; template: string; templateHash: string })
  | (Base & {
      action: 'replace-runner';
      replacement: string;
      template: string;
      templateHash: string;
      createFirst: boolean;
    })
  | (Base & { action: 'destroy-runner' })
  | (Base & { action: 'retire-template' });

export type ActionKind = Action['action'];

/** Why a profile is not converging right now, even though nothing is to be done this pass. */
export interface Wait {
  profile: string;
  reason: string;
}

export interface Plan {
  actions: Action[];
  waits: Wait[];
  unrecognized: Observation['unrecognized'];
  /** Runners running but not ready yet: `reconcile --once` waits for them (briefly), `watch` looks again soon. */
  booting: string[];
  /** Busy runners on outdated templates left to finish their job (never waited for by `reconcile --once`). */
  draining: string[];
}
