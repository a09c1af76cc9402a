import type { Logger } from 'pino';
import type { GuestMeta, Hypervisor, Verdict } from '../hypervisor/hypervisor.js';
import type { CompiledProfile } from '../sources/view.js';

export interface BuildDeps {
  hypervisor: Hypervisor;
  clock: () => Date;
  sleep: (ms: number) => Promise<void>;
  log: Logger;
  /** How often a running build is looked at: a crashed guest is judged at the next look, not at the timeout. */
  pollMs: number;
  ownerToken?: string;
  /** Resolves when the process is asked to stop: the build is then left to the next pass to discard. */
  stopping?: Promise<void>;
}

export type BuildResult = { verdict: Verdict; abandoned?: false } | { abandoned: true };

/** Creates and starts the rebuild guest, then waits for its verdict or the profile's timeout. */
export async function runBuild(
  profile: CompiledProfile,
  name: string,
  gen: string,
  deps: BuildDeps,
  prepared: { baseImage: string; manifest?: string; onDefined?: () => void } = { baseImage: '' },
): Promise<BuildResult> {
  const meta: GuestMeta = {
    profile: profile.name,
    gen,
    inputsHash: profile.inputsHash,
    baseVersion: profile.baseVersion,
    createdAt: deps.clock().toISOString(),
    ...(deps.ownerToken ? { owner: deps.ownerToken } : {}),
    ...(prepared.manifest ? { manifest: prepared.manifest } : {}),
  };
  try {
    await deps.hypervisor.startBuild({ name, profile, meta, baseImage: prepared.baseImage });
  } finally {
    prepared.onDefined?.();
  }
  deps.log.info({ timeoutSeconds: profile.provision.timeoutSeconds }, 'build started');
  const deadline = deps.clock().getTime() + profile.provision.timeoutSeconds * 1000;
  let stop = false;
  void deps.stopping?.then(() => (stop = true));
  for (;;) {
    const check = await deps.hypervisor.checkBuild(name);
    if (check.done) return { verdict: check.verdict };
    if (stop) return { abandoned: true };
    if (deps.clock().getTime() >= deadline) {
      return {
        verdict: { ok: false, reason: `timed out after ${profile.provision.timeoutSeconds}s (provision.timeout)` },
      };
    }
    await Promise.race([deps.sleep(deps.pollMs), deps.stopping ?? new Promise(() => undefined)]);
  }
}
