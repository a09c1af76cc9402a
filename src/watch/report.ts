import type { Logger } from 'pino';
import { formatProblem, type Problem } from '../errors.js';
import type { WatchStatus } from '../state/watch-status.js';
import type { Choice } from './choose-view.js';

/**
 * Logs the sources' problems once per change: the same broken file is not repeated on every pass
 * (resyncs, build completions), but every edit that changes the problems is logged.
 */
export class ProblemReporter {
  private lastKey = '[]';

  constructor(private readonly log: Logger) {}

  report(choice: Choice): void {
    const lines = choice.problems.map(formatProblem);
    const key = JSON.stringify(lines);
    if (key === this.lastKey) return;
    const had = this.lastKey !== '[]';
    this.lastKey = key;
    const using = choice.view ? `generation ${choice.view.generation}` : 'none: no view has ever compiled';
    if (!choice.compiled)
      this.log.error(
        { problems: lines },
        `the sources do not compile; reconciling against the last good view (${using})`,
      );
    else if (!choice.accepted)
      this.log.warn(
        { problems: lines, absentSince: choice.absence.absentSince },
        `source dirs are gone; keeping the last good view (${using}) until their grace period ends`,
      );
    else if (lines.length > 0) this.log.warn({ problems: lines }, 'the sources compile with warnings');
    else if (had) this.log.info('the sources compile cleanly again');
  }
}

/**
 * What `corral status` shows: only what makes the watch deviate (it prints them under "using the
 * last good view"): an invalid host config, and the sources' problems while the fresh view is refused.
 */
export function watchStatus(choice: Choice, configProblems: Problem[], lastPassAt?: string): WatchStatus {
  return {
    pid: process.pid,
    updatedAt: new Date().toISOString(),
    ...(choice.view ? { generation: choice.view.generation } : {}),
    problems: [...configProblems, ...(choice.accepted ? [] : choice.problems)],
    absentSince: choice.absence.absentSince,
    ...(lastPassAt ? { lastPassAt } : {}),
  };
}
