import type { Logger } from 'pino';
import { formatProblem, type Problem } from '../errors.js';
import type { Choice } from './choose-view.js';

/**
 * Logs what the watch is living with, once per change: the same broken file is not repeated on
 * every pass (resyncs, build completions), but every new edit that changes the problems is logged.
 */
export class ProblemReporter {
  private lastKey = '';

  constructor(private readonly log: Logger) {}

  report(choice: Choice, configProblems: Problem[]): Problem[] {
    const problems = [...configProblems, ...choice.problems];
    const lines = problems.map(formatProblem);
    const key = JSON.stringify(lines);
    if (key === this.lastKey) return problems;
    const had = this.lastKey !== '' && this.lastKey !== '[]';
    this.lastKey = key;
    const errors = problems.filter((p) => p.severity === 'error').length;
    const using = choice.view ? `generation ${choice.view.generation}` : 'nothing: no view has ever compiled';
    if (!choice.compiled)
      this.log.error(
        { problems: lines },
        `the sources do not compile; reconciling against the last good view (${using})`,
      );
    else if (errors > 0)
      this.log.error({ problems: lines }, `the host config is invalid; running with the previous one`);
    else if (!choice.accepted && choice.absence.holding.length > 0)
      this.log.warn(
        { problems: lines, absentSince: choice.absence.absentSince },
        `source dirs are gone; keeping the last good view (${using}) until their grace period ends`,
      );
    else if (problems.length > 0) this.log.warn({ problems: lines }, 'the sources compile with warnings');
    else if (had) this.log.info('the sources compile cleanly again');
    return problems;
  }
}
