import { join } from 'node:path';
import type { PendingDeregistration } from '../plan/types.js';
import { backoffSeconds, RecordFile } from './record-file.js';

/**
 * Deregistrations that failed (a `ci.hook.deregister` that exited non-zero or timed out), per
 * runner, persisted in `state/ci-deregistrations.json` so that cron runs, `watch` and `status`
 * see them: each is retried after an exponential back-off (the host config's ci.backoffInitial /
 * ci.backoffMax) until it succeeds. A runner name with a deregistration pending is not
 * registered again before that deregistration went through.
 */
export class DeregistrationStore {
  private readonly records: RecordFile<PendingDeregistration>;

  constructor(
    stateDir: string,
    private readonly policy: { initialSeconds: number; maxSeconds: number },
  ) {
    this.records = new RecordFile(join(stateDir, 'ci-deregistrations.json'));
  }

  read(): Promise<Record<string, PendingDeregistration>> {
    return this.records.read();
  }

  recordFailure(
    runner: string,
    failure: { profile: string; system: string; error: string },
    now: Date,
  ): Promise<PendingDeregistration> {
    return this.records.update((all) => {
      const previous = all[runner];
      const failures = (previous?.failures ?? 0) + 1;
      const delay = backoffSeconds(this.policy, failures);
      const entry: PendingDeregistration = {
        profile: failure.profile,
        system: failure.system,
        since: previous?.since ?? now.toISOString(),
        retryAt: new Date(now.getTime() + delay * 1000).toISOString(),
        failures,
        lastError: failure.error,
      };
      all[runner] = entry;
      return entry;
    });
  }

  recordSuccess(runner: string): Promise<void> {
    return this.records.remove(runner);
  }
}
