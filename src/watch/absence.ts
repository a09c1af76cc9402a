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
}

/**
 * The grace period for vanished sources. A source dir is "known" once the accepted view was read
 * with it present (or, at start, when the stored view has profiles from it). A known dir that is
 * still configured but missing is held for `graceMs`: until then the caller keeps the last good view,
 * so a partition unmounted for a moment, or a mount that comes late at boot, tears nothing down.
 */
export class AbsenceTracker {
  private known: Set<string>;
  private readonly since = new Map<string, number>();

  constructor(
    private graceMs: number,
    known: Iterable<string>,
  ) {
    this.known = new Set(known);
  }

  setGrace(graceMs: number): void {
    this.graceMs = graceMs;
  }

  observe(present: Set<string>, configured: (dir: string) => boolean, now: number): AbsenceReport {
    // A source removed from the host config is gone on purpose: no grace.
    for (const dir of [...this.known]) if (!configured(dir)) this.known.delete(dir);
    const missing = [...this.known].filter((d) => !present.has(d)).sort();
    for (const dir of [...this.since.keys()]) if (!missing.includes(dir)) this.since.delete(dir);
    const newlyMissing = missing.filter((d) => !this.since.has(d));
    for (const dir of newlyMissing) this.since.set(dir, now);
    const holding = missing.filter((d) => now - (this.since.get(d) ?? now) < this.graceMs);
    const expiries = holding.map((d) => (this.since.get(d) ?? now) + this.graceMs);
    return {
      holding,
      expired: missing.filter((d) => !holding.includes(d)),
      newlyMissing,
      absentSince: Object.fromEntries(missing.map((d) => [d, new Date(this.since.get(d) ?? now).toISOString()])),
      ...(expiries.length > 0 ? { nextExpiry: Math.min(...expiries) } : {}),
    };
  }

  /** A new view was accepted: the dirs it was read from are the known ones from now on. */
  accept(present: Iterable<string>): void {
    this.known = new Set(present);
    for (const dir of [...this.since.keys()]) if (!this.known.has(dir)) this.since.delete(dir);
  }
}
