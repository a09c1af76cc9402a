/** Small helpers for tests that drive real guests through the Hypervisor interface. */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { GuestMeta } from '../../src/hypervisor/hypervisor.js';
import type { CompiledProfile } from '../../src/sources/view.js';

export function metaFor(profile: CompiledProfile, gen: string, owner?: string): GuestMeta {
  const meta: GuestMeta = {
    profile: profile.name,
    gen,
    inputsHash: profile.inputsHash,
    baseVersion: profile.baseVersion,
    createdAt: new Date().toISOString(),
  };
  if (owner !== undefined) meta.owner = owner;
  return meta;
}

/** Polls `probe` every 200 ms until it returns a value. */
export async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Every regular file under dir, relative to it ([] when dir does not exist). */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}
