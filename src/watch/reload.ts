import type { Logger } from 'pino';
import type { HostConfig } from '../config/host-config.js';
import { ConfigError, formatProblem, type Problem } from '../errors.js';

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

/**
 * SIGHUP or an edit of the host config: the new config, or the running one and the problems that
 * kept the new one out. Logged here, once per reload.
 */
export async function reloadConfig(
  running: HostConfig,
  load: () => Promise<HostConfig>,
  log: Logger,
): Promise<{ config: HostConfig; problems: Problem[] }> {
  try {
    const { config, kept } = mergeReloaded(running, await load());
    if (kept.length > 0)
      log.warn({ settings: kept }, 'these settings change only when corral watch restarts; keeping the running values');
    log.info({ config: config.file, sources: config.sources.map((s) => s.name) }, 'host config reloaded');
    return { config, problems: [] };
  } catch (error) {
    const file = running.file ?? '';
    const problems: Problem[] =
      error instanceof ConfigError && error.problems.length > 0
        ? error.problems
        : [{ file, severity: 'error', message: `cannot reload the host config: ${(error as Error).message}` }];
    log.error(
      { config: file, problems: problems.map(formatProblem) },
      'the host config is invalid; keeping the previous one',
    );
    return { config: running, problems };
  }
}

/** Longest a never-quiet stream of file events can hold off a pass. */
export function maxWaitMs(debounceMs: number): number {
  return Math.max(2000, 10 * debounceMs);
}
