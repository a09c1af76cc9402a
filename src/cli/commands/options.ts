import { ConfigError } from '../../errors.js';

export function positiveInt(value: unknown, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new ConfigError(`${flag} must be a whole number from 1 to 64, not ${JSON.stringify(value)}`);
  return n;
}
