import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { CompiledView } from '../sources/view.js';
import { writeFileAtomic } from '../util/atomic-write.js';

/**
 * Vanished sources, remembered in the state dir so that every mode honours the grace period:
 * `watch` (in memory and here, for its restarts) and every `reconcile --once` from cron alike.
 * A source dir that the current view drew profiles from and that is missing now (unmounted, a
 * mistyped path, a glob that matches nothing) keeps its profiles until `watch.absentGrace` after it
 * was first seen missing; only then may its profiles go.
 */

/** A source dir the current view has profiles from, with the name of the host-config source that gave it. */
export interface KnownSource {
  dir: string;
  source: string;
}

/** A known source dir that is missing now. `graceUntil` is when its profiles may go (a typed time for schedulers). */
export interface HeldSource extends KnownSource {
  since: Date;
  graceUntil: Date;
}

/** What `state/sources-absent.json` holds: when each missing dir was first seen missing. */
export interface AbsenceRecord {
  format_version: 1;
  absent: Record<string, { source: string; since: string }>;
}

export interface AbsenceJudgement {
  /** Missing for less than the grace period: the last good view (with their profiles) stays. */
  holding: HeldSource[];
  /** Missing for the whole grace period: their profiles may go now. */
  expired: HeldSource[];
  /** Dirs first seen missing by this judgement. */
  newlyMissing: string[];
  /** The record to keep from now on; `changed` says whether it differs from the one given. */
  record: AbsenceRecord;
  changed: boolean;
  /** When the earliest held dir's grace ends. */
  nextExpiry?: Date;
}

export const ABSENCE_FILE = 'sources-absent.json';

export function emptyAbsenceRecord(): AbsenceRecord {
  return { format_version: 1, absent: {} };
}

/** The source dirs a view has profiles from (masks only hide profiles, so losing one removes nothing). */
export function knownSourcesOf(view: CompiledView | undefined): KnownSource[] {
  const byDir = new Map<string, string>();
  // A glob source names its profiles `<source>:<dir>`; host-config source names hold no ':'.
  for (const p of view?.profiles ?? []) byDir.set(dirname(p.dir), p.source.split(':')[0] ?? p.source);
  return [...byDir].map(([dir, source]) => ({ dir, source })).sort((a, b) => (a.dir < b.dir ? -1 : 1));
}

/**
 * Pure: which known dirs are held and which have been gone for the whole grace period. A dir whose
 * source was removed from the host config (`configured` says no) is gone on purpose: no grace.
 */
export function judgeAbsence(input: {
  known: readonly KnownSource[];
  present: ReadonlySet<string>;
  configured: (source: KnownSource) => boolean;
  record: AbsenceRecord;
  now: Date;
  graceMs: number;
}): AbsenceJudgement {
  const { now, graceMs } = input;
  const missing = input.known.filter((k) => !input.present.has(k.dir) && input.configured(k));
  const absent: AbsenceRecord['absent'] = {};
  const newlyMissing: string[] = [];
  const holding: HeldSource[] = [];
  const expired: HeldSource[] = [];
  for (const k of missing) {
    const earlier = input.record.absent[k.dir];
    const sinceMs = earlier ? Date.parse(earlier.since) : NaN;
    // A since in the future (a clock that jumped back) or unreadable counts from now.
    const since = Number.isFinite(sinceMs) && sinceMs <= now.getTime() ? new Date(sinceMs) : now;
    if (!earlier) newlyMissing.push(k.dir);
    absent[k.dir] = { source: k.source, since: since.toISOString() };
    const held: HeldSource = { ...k, since, graceUntil: new Date(since.getTime() + graceMs) };
    (held.graceUntil.getTime() > now.getTime() ? holding : expired).push(held);
  }
  const record: AbsenceRecord = { format_version: 1, absent };
  const changed = JSON.stringify(record.absent) !== JSON.stringify(input.record.absent);
  const nextExpiry = holding.length ? new Date(Math.min(...holding.map((h) => h.graceUntil.getTime()))) : undefined;
  return { holding, expired, newlyMissing, record, changed, ...(nextExpiry ? { nextExpiry } : {}) };
}

/** The record in the state dir; a missing or damaged one counts as empty (the dirs are seen missing from now). */
export async function readAbsenceRecord(stateDir: string): Promise<AbsenceRecord> {
  try {
    const parsed = JSON.parse(await readFile(join(stateDir, ABSENCE_FILE), 'utf8')) as Partial<AbsenceRecord>;
    if (parsed && typeof parsed.absent === 'object' && parsed.absent !== null && !Array.isArray(parsed.absent)) {
      const absent: AbsenceRecord['absent'] = {};
      for (const [dir, entry] of Object.entries(parsed.absent)) {
        if (typeof entry?.source === 'string' && typeof entry.since === 'string') absent[dir] = entry;
      }
      return { format_version: 1, absent };
    }
  } catch {
    // fall through: unreadable is the same as none
  }
  return emptyAbsenceRecord();
}

export async function writeAbsenceRecord(stateDir: string, record: AbsenceRecord): Promise<void> {
  await writeFileAtomic(join(stateDir, ABSENCE_FILE), `${JSON.stringify(record, null, 2)}\n`);
}

/** One line per held dir, as `plan`, `compile`, `reconcile` and the watch say it. */
export function describeHeld(held: HeldSource): string {
  return `kept: source "${held.source}" ${held.dir} absent since ${held.since.toISOString()} (grace until ${held.graceUntil.toISOString()})`;
}

export function describeExpired(held: HeldSource): string {
  return `source "${held.source}" ${held.dir} absent since ${held.since.toISOString()}; the grace ended at ${held.graceUntil.toISOString()}, so its profiles are removed`;
}
