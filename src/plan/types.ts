import type { CompiledProfile } from '../sources/view.js';
import type { Observation } from '../hypervisor/hypervisor.js';

export interface BackoffEntry {
  failures: number;
  /** ISO time before which the profile is not tried again. */
  until: string;
  lastError: string;
  /** The last failure was the host's (a HostError), not a build's. */
  host?: true;
  /** ISO time of the last failure; a rebuild requested after it is not held back. */
  failedAt?: string;
}

/** A CI system failing for a profile: its runner creation waits until retryAt (existing runners stay). */
export interface CiOutage {
  system: string;
  summary: string;
  /** ISO time of the first failure in this run of failures. */
  since: string;
  retryAt: string;
  failures: number;
}

/** A runner's CI deregistration that failed (its guest is gone): retried at retryAt. */
export interface PendingDeregistration {
  profile: string;
  system: string;
  /** ISO time of the first failure. */
  since: string;
  retryAt: string;
  failures: number;
  /** The failure, with the hook's last stderr lines. */
  lastError: string;
}

/** What the operator configured: the same for every pass until the host config changes. */
export interface Policy {
  readonly prefix: string;
  readonly keepTemplates: number;
  /** At most this fraction of a profile's runners is being replaced at once (at least one). */
  readonly surgeFraction: number;
  readonly concurrency: Readonly<{ builds: number; clones: number }>;
}

/** A configured source dir that is gone but still within its grace period: its profiles are kept until `until`. */
export interface AbsentSource {
  readonly dir: string;
  /** ISO time the grace period ends. */
  readonly until: string;
}

/** What is true right now besides the guests: a snapshot taken for one plan, never changed under it. */
export interface Facts {
  /** Lock token of the process that owns in-flight builds; rebuilds owned by anyone else are orphans. */
  readonly ownerToken?: string;
  /**
   * Rebuilds the owner has queued or is waiting on, when the planner runs inside the owner. A rebuild
   * carrying our token but not in this list (its failed destroy left it behind) is an orphan too.
   * Undefined outside the owner (`corral plan`, `status`): every rebuild with the owner's token counts as in flight.
   */
  readonly inFlight?: readonly string[];
  /** Per-profile back-off after failed builds. */
  readonly backoff: Readonly<Record<string, Readonly<BackoffEntry>>>;
  /** Per-profile back-off after runners crashed: a runner that dies on every boot is not replaced in a hot loop. */
  readonly runnerBackoff: Readonly<Record<string, Readonly<BackoffEntry>>>;
  readonly absentSources: readonly AbsentSource[];
  /**
   * Builds that failed on a configuration error (a bad base, say), by profile, with the inputs hash
   * they were tried with: retrying cannot help, so no build of those inputs starts again. A change
   * of the sources changes the hash and lifts it.
   */
  readonly configErrors?: Readonly<Record<string, Readonly<{ inputsHash: string; error: string }>>>;
  /**
   * Profiles whose base version could not be resolved this pass (docs/images.md, "Resolve"): no
   * build starts for them, their live template and runners stay; `retryAt` is when to look again.
   */
  readonly unresolvedBases?: Readonly<Record<string, Readonly<{ reason: string; retryAt: string }>>>;
  /** CI systems failing per profile: no runner of that profile is created before retryAt. */
  readonly ciOutages?: Readonly<Record<string, Readonly<CiOutage>>>;
  /** Runners a CI job holds (GitLab claims): never destroyed, replaced or rolled over by the planner. */
  readonly claimed?: readonly string[];
  /**
   * Claims older than the host's ci.maxJobDuration whose cleanup never came: the runner, used by a
   * job that may have left anything behind, is destroyed and replaced.
   */
  readonly staleClaims?: readonly Readonly<{ runner: string; job: string; claimedAt: string }>[];
  /** When each live claim goes stale (ISO time, claimedAt + ci.maxJobDuration): the planner wakes then. */
  readonly claimExpiries?: Readonly<Record<string, string>>;
  /** Failed deregistrations by runner name, retried at their retryAt (shown as `ci-deregister` waits). */
  readonly pendingDeregistrations?: Readonly<Record<string, Readonly<PendingDeregistration>>>;
  /** Rebuilds asked for by an operator (profile → ISO time): a template made before that time is rebuilt, inputs unchanged or not. */
  readonly rebuildRequests?: Readonly<Record<string, string>>;
  /** `publish: {oci}`: what each profile last pushed, and where (state/published.json). */
  readonly published?: Readonly<Record<string, Readonly<Published>>>;
  /** Per-profile back-off after failed publishes: no push is tried before `until`. */
  readonly publishBackoff?: Readonly<Record<string, Readonly<BackoffEntry>>>;
  /**
   * Pulls running now in any process, by manifest hex (their staging locks): who holds them. Lets
   * a planner outside the puller (`plan`, `status`) say "being pulled" instead of planning it again.
   */
  readonly pullsRunning?: Readonly<Record<string, string>>;
}

/** The last successful publish of a profile. */
export interface Published {
  template: string;
  reference: string;
  /** Manifest digest the tag was set to. */
  digest: string;
  /** ISO time. */
  at: string;
}

export interface PlanInput {
  readonly profiles: readonly CompiledProfile[];
  readonly observed: Observation;
  readonly now: Date;
  readonly policy: Policy;
  readonly facts: Facts;
}

interface Base {
  guest: string;
  profile: string;
  reason: string;
}

export type Action =
  | (Base & { action: 'build'; gen: string; template: string; inputsHash: string })
  /**
   * A profile that follows a registry (`template: {oci}`): pull the digest its tag resolved to and
   * land it as `template` (= guest, the name it will have). Runs in the background like a build.
   */
  | (Base & { action: 'pull'; gen: string; template: string; reference: string; inputsHash: string })
  /** `publish: {oci}`: push the live template (= guest) to `reference`; background, retried with back-off until it succeeds. */
  | (Base & { action: 'publish'; template: string; reference: string })
  | (Base & { action: 'promote'; template: string })
  | (Base & { action: 'discard' })
  | (Base & { action: 'create-runner'; template: string; templateHash: string })
  | (Base & {
      action: 'replace-runner';
      replacement: string;
      template: string;
      templateHash: string;
      createFirst: boolean;
      /** The runner crashed (rather than shut off after its job): counts towards the profile's runner back-off. */
      crashed?: true;
    })
  | (Base & { action: 'destroy-runner' })
  | (Base & { action: 'retire-template' });

export type ActionKind = Action['action'];

/** Actions that run in the background (the build queue) and count as in flight until they settle. */
export const BACKGROUND_ACTIONS: readonly ActionKind[] = ['build', 'pull', 'publish'];

/**
 * The name a background action is tracked under in `Facts.inFlight`: its guest (the rebuild, or
 * the template a pull lands as), except a publish, which must not look like a build or pull of
 * its profile (it holds nothing back).
 */
export function inFlightKey(a: Pick<Action, 'action' | 'guest'>): string {
  return a.action === 'publish' ? `publish:${a.guest}` : a.guest;
}

/**
 * Why a profile is not converging right now, even though nothing is to be done for it this pass.
 * `until` is when the wait ends by itself (no outside event needed); absent when only an event ends it.
 */
export type Wait = { profile: string; reason: string; until?: string } & (
  | {
      kind:
        | 'build-backoff'
        | 'runner-backoff'
        | 'build-in-flight'
        | 'base-unresolved'
        | 'runner-booting'
        | 'runner-draining'
        | 'ci-outage'
        | 'publish-backoff'
        | 'ci-deregister';
      until: string;
    }
  | { kind: 'build-queued' | 'pull-queued' | 'publish-queued' | 'no-template' | 'config-error' | 'runners-busy' }
  /** A profile that follows a registry whose tag could not be resolved this pass. */
  | { kind: 'registry' }
);

export type WaitKind = Wait['kind'];

/** The earliest time this plan's answer changes with nothing happening outside (controller-runtime's RequeueAfter). */
export interface Requeue {
  /** ISO time. */
  at: string;
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
  requeue?: Requeue;
}
