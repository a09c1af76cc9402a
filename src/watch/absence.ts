import {
  emptyAbsenceRecord,
  judgeAbsence,
  readAbsenceRecord,
  writeAbsenceRecord,
  type AbsenceRecord,
  type HeldSource,
  type KnownSource,
} from '../state/source-absence.js';

export interface AbsenceReport {
  /** Known source dirs gone for less than the grace period: the last good view (with their profiles) is kept. */
  holding: string[];
  /** Known source dirs gone longer than the grace period: their profiles may now go. */
  expired: string[];
  /** Dirs first seen missing in this observation. */
  newlyMissing: string[];
  /** When each missing dir was first seen missing (ISO). */
  absentSince: Record<string, string>;
  /** When the earliest held dir's grace period ends (epoch ms). */
  nextExpiry?: number;
  /** The held dirs as data, with their grace end as a time. */
  held: HeldSource[];
  expiredSources: HeldSource[];
}

/**
 * The watch's view of vanished sources: the record of src/state/source-absence.ts, kept in memory
 * between passes and written through to the state dir whenever it changes, so a restarted watch
 * and the cron runs in between go on counting from the same moment.
 */
export class AbsenceTracker {
  private record: AbsenceRecord = emptyAbsenceRecord();

  constructor(
    private graceMs: number,
    private readonly stateDir?: string,
  ) {}

  /** Picks up the record a previous watch or cron run left. */
  async load(): Promise<void> {
    if (this.stateDir) this.record = await readAbsenceRecord(this.stateDir);
  }

  setGrace(graceMs: number): void {
    this.graceMs = graceMs;
  }

  async observe(
    known: readonly KnownSource[],
    present: ReadonlySet<string>,
    configured: (source: KnownSource) => boolean,
    now: number,
  ): Promise<AbsenceReport> {
    const judged = judgeAbsence({
      known,
      present,
      configured,
      record: this.record,
      now: new Date(now),
      graceMs: this.graceMs,
    });
    this.record = judged.record;
    if (judged.changed && this.stateDir) await writeAbsenceRecord(this.stateDir, judged.record);
    return {
      holding: judged.holding.map((h) => h.dir),
      expired: judged.expired.map((h) => h.dir),
      newlyMissing: judged.newlyMissing,
      absentSince: Object.fromEntries(Object.entries(judged.record.absent).map(([dir, e]) => [dir, e.since])),
      ...(judged.nextExpiry ? { nextExpiry: judged.nextExpiry.getTime() } : {}),
      held: judged.holding,
      expiredSources: judged.expired,
    };
  }
}
