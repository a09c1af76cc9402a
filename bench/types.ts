export interface BenchResult {
  name: string;
  /** Named figures: numbers are printed as they are, with units in the key (e.g. `ms`, `processes`). */
  figures: Record<string, number | string>;
  /** The target as text and whether it was met, when the benchmark has one. */
  target?: { text: string; met: boolean };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export async function timeMs<T>(fn: () => Promise<T> | T): Promise<{ ms: number; value: T }> {
  const start = process.hrtime.bigint();
  const value = await fn();
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, value };
}
