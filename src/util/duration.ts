const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Seconds from a number of seconds or a string such as `300ms`, `90s`, `30m`, `12h`, `7d`; undefined if unparsable. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*(ms|[smhdw]?)$/.exec(value.trim());
  if (!match) return undefined;
  const seconds = Number(match[1]) * (UNITS[match[2] || 's'] ?? 1);
  // 400 digits are Infinity, which JSON stores as null: not a duration.
  return Number.isFinite(seconds) ? seconds : undefined;
}

export interface Range {
  min: number;
  max: number;
}

/** The seconds of a duration within range, or the message that says what to write instead. */
export function checkDuration(value: unknown, range: Range): { seconds: number } | { message: string } {
  const seconds = parseDuration(value);
  const span = `between ${formatDuration(range.min)} and ${formatDuration(range.max)}`;
  if (seconds === undefined)
    return { message: `not a duration: ${shortJson(value)} (use e.g. 300ms, 90s, 30m, 12h, 7d; ${span})` };
  if (seconds < range.min || seconds > range.max)
    return { message: `${shortJson(value)} is out of range: must be ${span}` };
  return { seconds };
}

/** setTimeout takes at most 2^31-1 ms; anything longer fires at once. Every timer goes through this. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
export function clampTimerMs(ms: number): number {
  return Number.isFinite(ms) ? Math.min(Math.max(0, ms), MAX_TIMER_MS) : MAX_TIMER_MS;
}

function shortJson(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 32)}…(${text.length} chars)` : text;
}

export function formatDuration(seconds: number): string {
  if (seconds > 0 && seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

/** Guest memory bounds: below 16 MiB nothing boots; above 16 TiB is a typo. */
export const MEMORY_MIB_RANGE = { min: 16, max: 16 * 1024 * 1024 };

/** MiB from a number (MiB) or a string such as `512M`, `1G`, `1536MiB`. */
export function parseMemoryMiB(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+)\s*(M|MiB|G|GiB)?$/i.exec(value.trim());
  if (!match) return undefined;
  const n = Number(match[1]);
  return /^g/i.test(match[2] ?? 'M') ? n * 1024 : n;
}
