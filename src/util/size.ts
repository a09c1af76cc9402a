const UNIT: Record<string, number> = { '': 2 ** 20, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** Bytes from `512M`, `40G`, `1T`, `40GiB` or `40GB` (binary units; a bare number is MiB); undefined if unparsable. */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value * UNIT['']! : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+)\s*([MGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!match) return undefined;
  const n = Number(match[1]);
  return n > 0 ? n * UNIT[(match[2] ?? '').toUpperCase()]! : undefined;
}

/** `1.5 GiB`, `300 MiB`, `12 KiB`: for messages. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 10 ? 0 : 1)} ${units[unit]}`;
}
