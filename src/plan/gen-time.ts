import type { ObservedGuest } from '../hypervisor/hypervisor.js';

/** When a template or rebuild was made: its metadata, else the timestamp in its generation. */
export function createdAt(guest: ObservedGuest): Date {
  const fromMeta = Date.parse(guest.meta.createdAt);
  if (!Number.isNaN(fromMeta)) return new Date(fromMeta);
  const stamp = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(guest.gen ?? '');
  if (!stamp) return new Date(0);
  const [, y, mo, d, h, mi, s] = stamp;
  return new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`);
}

/** Newest generation first (generations sort by their UTC timestamp). */
export function newestFirst(a: ObservedGuest, b: ObservedGuest): number {
  return (b.gen ?? '').localeCompare(a.gen ?? '');
}
