/**
 * The content-addressed base image cache: `<imagesDir>/base/sha256/<hex>.qcow2`, where hex is the
 * sha256 of the profile's base file (its resolved base version). Entries appear atomically
 * (temp name, then rename), so a crash never leaves a half-written base that looks valid.
 */
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ConfigError, TransientError } from '../errors.js';
import type { CompiledProfile } from '../sources/view.js';
import { sha256File } from '../util/hash.js';
import type { Exec } from '../exec/exec.js';

export interface BaseCacheDeps {
  imagesDir: string;
  exec: Exec;
}

export function baseDigest(baseVersion: string): string {
  const hex = baseVersion.replace(/^sha256:/, '');
  if (!/^[0-9a-f]{64}$/.test(hex))
    throw new ConfigError(`base version ${JSON.stringify(baseVersion)} is not a sha256 digest`);
  return hex;
}

export function cachedBasePath(imagesDir: string, baseVersion: string): string {
  return path.join(path.resolve(imagesDir), 'base', 'sha256', `${baseDigest(baseVersion)}.qcow2`);
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

interface ImageInfo {
  format?: string;
  'backing-filename'?: string;
}

/** Returns the cached base image for the profile, adding it to the cache first if needed. */
export async function ensureBaseImage(profile: CompiledProfile, deps: BaseCacheDeps): Promise<string> {
  if (profile.base.kind !== 'file') {
    throw new ConfigError(`profile ${profile.name}: base of kind '${profile.base.kind}' is not yet supported`);
  }
  const target = cachedBasePath(deps.imagesDir, profile.baseVersion);
  if (await exists(target)) return target;

  const source = path.resolve(profile.dir, profile.base.file);
  const expected = baseDigest(profile.baseVersion);
  // The view was compiled earlier; caching changed bytes under the old digest would poison the cache.
  const actual = await sha256File(source);
  if (actual !== expected) {
    throw new TransientError(
      `profile ${profile.name}: base ${source} changed since the view was compiled (sha256:${actual})`,
    );
  }

  await mkdir(path.dirname(target), { recursive: true });
  const tmp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    const { stdout } = await deps.exec('qemu-img', ['info', '--output=json', source]);
    const info = JSON.parse(stdout) as ImageInfo;
    if (info.format === 'qcow2' && !info['backing-filename']) {
      await copyFile(source, tmp);
    } else {
      // raw (or anything else qemu-img reads, or a qcow2 with a backing file): a standalone qcow2.
      await deps.exec('qemu-img', ['convert', '-O', 'qcow2', source, tmp]);
    }
    await rename(tmp, target);
  } finally {
    await rm(tmp, { force: true });
  }
  return target;
}
