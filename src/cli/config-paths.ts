import { ConfigError } from '../errors.js';
import type { HostConfig } from '../config/host-config.js';

/**
 * A filesystem error under the state or images dir is about the host config's `stateDir` or
 * `imagesDir`: say which key to fix and where it points, not "internal error: ENOTDIR".
 */
export function namePaths(error: unknown, config: HostConfig | undefined): unknown {
  const err = error as NodeJS.ErrnoException;
  if (!config || !err || typeof err.code !== 'string' || typeof err.path !== 'string') return error;
  const keys = [
    ['stateDir', config.stateDir],
    ['imagesDir', config.imagesDir],
  ] as const;
  const hit = keys.find(([, dir]) => err.path === dir || err.path?.startsWith(`${dir}/`));
  if (!hit) return error;
  const [key, dir] = hit;
  const why: Record<string, string> = {
    ENOTDIR: 'a file is in the way of a directory',
    EEXIST: 'a file is in the way of a directory',
    ENOENT: 'it (or the dir it links to) does not exist and cannot be created',
    EROFS: 'it is on a read-only filesystem',
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    ENOSPC: 'the disk is full',
    ELOOP: 'a symlink loop',
  };
  return new ConfigError(`${key} ${dir} is unusable: ${why[err.code] ?? err.code} (${err.code} at ${err.path})`, [
    {
      file: config.file ?? '(built-in default config)',
      where: `/${key}`,
      severity: 'error',
      message: `set "${key}" to a writable directory (now ${dir})`,
    },
  ]);
}
