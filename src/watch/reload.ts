import type { HostConfig } from '../config/host-config.js';

/** Settings a running watch cannot switch: it holds the lock and the hypervisor connection they name. */
export const RESTART_ONLY = [
  'stateDir',
  'imagesDir',
  'hypervisor',
  'libvirtUri',
  'libvirtDomainType',
  'prefix',
] as const;

/** The reloaded config, with the restart-only settings kept as they were (and which ones differed). */
export function mergeReloaded(running: HostConfig, fresh: HostConfig): { config: HostConfig; kept: string[] } {
  const kept = RESTART_ONLY.filter((key) => running[key] !== fresh[key]);
  const config: HostConfig = { ...fresh };
  for (const key of kept) Object.assign(config, { [key]: running[key] });
  return { config, kept: [...kept] };
}

/** Longest a never-quiet stream of file events can hold off a pass. */
export function maxWaitMs(debounceMs: number): number {
  return Math.max(2000, 10 * debounceMs);
}
