/**
 * What applying a plan needs: the hypervisor, the stores and the optional integrations. Its own
 * file so that apply.ts and the build it starts (build-template.ts) both depend on it, not on each other.
 */
import type PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { CompiledProfile } from '../sources/view.js';
import type { BackoffStore } from '../state/backoff-store.js';
import type { EventLog } from '../state/events.js';
import type { BaseCache } from '../images/base-cache.js';
import type { DiskFloor } from '../images/floor.js';
import type { BuildRecords } from '../state/build-records.js';
import type { BuildDeps } from './run-build.js';
import type { RunnerLogs } from '../state/runner-logs.js';
import type { RunnerCi } from '../ci/runner-ci.js';
import type { CiOutageStore } from '../state/ci-outages.js';
import type { DeregistrationStore } from '../state/ci-deregistrations.js';
import type { PublishStore } from '../state/published.js';
import type { TransferDeps } from './template-transfer.js';

export interface ApplyDeps extends BuildDeps {
  hypervisor: Hypervisor;
  log: Logger;
  events: EventLog;
  backoff: BackoffStore;
  /** Per-profile back-off after runners crashed. */
  runnerBackoff: BackoffStore;
  /** Fetches each build's base into the content-addressed cache (absent: builds get no base file). */
  bases?: BaseCache;
  /** Keeps the console log of runners that are destroyed (the last N per profile). */
  runnerLogs?: RunnerLogs;
  /** Provenance: a manifest and console log per build (absent: nothing is recorded). */
  records?: BuildRecords;
  /** The imagesDir free-space floor, checked before every build. */
  floor?: DiskFloor;
  /** `--keep-failed`: set failed rebuilds aside instead of destroying them. */
  keepFailed?: boolean;
  /** The compiled generation being applied, for the manifests. */
  generation?: number;
  profiles: ReadonlyMap<string, CompiledProfile>;
  concurrency: Readonly<{ builds: number; clones: number }>;
  /** Keeps queues across passes in `watch`, so background builds respect the limit too. */
  queues?: { builds: PQueue; clones: PQueue };
  /** Registers runners with their profile's CI system (absent: no profile uses one). */
  ci?: RunnerCi;
  ciOutages?: CiOutageStore;
  /** Failed hook deregistrations, retried with back-off (absent: a failure is only logged). */
  deregistrations?: DeregistrationStore;
  /** For profiles that follow (`template: {oci}`) or publish to a registry. */
  registry?: Omit<TransferDeps, 'hypervisor'>;
  /** What each publishing profile last pushed, and the back-off of failed pushes. */
  publishes?: PublishStore;
}
