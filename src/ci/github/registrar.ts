/**
 * Registering runners as GitHub just-in-time runners and cleaning up after them. A JIT runner
 * takes one job; its registration is named `<runner>@<host>` so several hosts can share a scope
 * and each sweeps only its own.
 */
import type { GitHubApi, Registration } from './api.js';
import { ForgeError } from './forge-error.js';

export const JITCONFIG_SEED_FILE = 'github-jitconfig';

export function registrationName(runner: string, host: string): string {
  return `${runner}@${host}`;
}

/** GitHub's architecture label for this machine (`X64`, `ARM64`, …). */
export function archLabel(nodeArch: string): string {
  return ({ x64: 'X64', arm64: 'ARM64', arm: 'ARM', ia32: 'X86' } as Record<string, string>)[nodeArch] ?? nodeArch;
}

export function runnerLabels(profile: string, arch: string, own: readonly string[]): string[] {
  return [...new Set(['self-hosted', arch, `corral-${profile}`, ...own])];
}

/**
 * Gets a JIT config for the runner. A 409 means a registration of that name is left over (its
 * guest died before GitHub removed it): delete it and ask once more.
 */
export async function registerJitRunner(
  api: GitHubApi,
  req: { name: string; runnerGroupId: number; labels: string[] },
): Promise<{ seedFiles: Record<string, string>; registration: Registration }> {
  let jit;
  try {
    jit = await api.generateJitConfig(req);
  } catch (error) {
    if (!(error instanceof ForgeError) || error.status !== 409) throw error;
    for (const stale of await api.listRunners(req.name)) if (stale.name === req.name) await api.deleteRunner(stale.id);
    jit = await api.generateJitConfig(req);
  }
  return { seedFiles: { [JITCONFIG_SEED_FILE]: jit.encodedJitConfig }, registration: jit.runner };
}

/** Deletes the registrations named `runner@host` (none is fine: GitHub removes a JIT runner after its job). */
export async function deregisterJitRunner(api: GitHubApi, name: string): Promise<number> {
  let deleted = 0;
  for (const r of await api.listRunners(name)) {
    if (r.name !== name) continue;
    await api.deleteRunner(r.id);
    deleted++;
  }
  return deleted;
}

/**
 * Registrations of this host whose guest is gone. `alive` holds every guest that exists or is
 * being created in this pass; registrations of other hosts are never touched.
 */
export function orphanedRegistrations(
  registrations: readonly Registration[],
  host: string,
  alive: ReadonlySet<string>,
): Registration[] {
  const suffix = `@${host}`;
  return registrations.filter((r) => r.name.endsWith(suffix) && !alive.has(r.name.slice(0, -suffix.length)));
}
