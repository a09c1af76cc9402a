/**
 * Profiles that follow a registry (`template: {oci: <ref>}`): each pass resolves the tag to a
 * digest with one HEAD (never a download) and makes that digest the profile's inputs hash, so the
 * planner treats a new digest exactly like changed inputs — where it would build, it plans a
 * `pull` action — and runners roll over once the pulled template is there. A registry that cannot be
 * reached is not a change: the profile keeps the inputs hash of its newest template, runners stay,
 * and a wait says why.
 */
import type { Observation } from '../hypervisor/hypervisor.js';
import { newestFirst } from '../plan/gen-time.js';
import type { Wait } from '../plan/types.js';
import type { CompiledProfile } from '../sources/view.js';
import { RegistryClient } from '../oci/client.js';
import type { CredentialStore } from '../oci/credentials.js';
import { formatReference, parseReference } from '../oci/reference.js';

export interface Followed {
  profiles: CompiledProfile[];
  waits: Wait[];
}

export async function resolveFollowed(
  profiles: CompiledProfile[],
  observed: Observation,
  credentials: CredentialStore,
): Promise<Followed> {
  const waits: Wait[] = [];
  const resolved = await Promise.all(
    profiles.map(async (p): Promise<CompiledProfile> => {
      if (!p.template) return p;
      const ref = parseReference(p.template.oci);
      let digest = ref.digest;
      let problem: string | undefined;
      if (!digest) {
        try {
          const client = new RegistryClient(ref.registry, { credentials, retries: 1, retryDelayMs: 200 });
          digest = await client.resolve(ref.repository, ref.tag ?? 'latest');
          if (!digest) problem = `${formatReference(ref)} does not exist (yet)`;
        } catch (err) {
          problem = `cannot resolve ${formatReference(ref)}: ${(err as Error).message}`;
        }
      }
      const templates = observed.guests.filter((g) => g.profile === p.name && g.role === 'template').sort(newestFirst);
      if (digest) {
        // The base version runners record is that of the template they will be cloned from.
        const baseVersion = templates.find((t) => t.meta.inputsHash === digest)?.meta.baseVersion ?? digest;
        return { ...p, inputsHash: digest, baseVersion, template: { ...p.template, digest } };
      }
      const newest = templates[0];
      waits.push({
        profile: p.name,
        kind: 'registry',
        reason: `${problem}; ${newest ? `runners stay on ${newest.name}` : 'no template to run yet'}`,
      });
      return newest ? { ...p, inputsHash: newest.meta.inputsHash, baseVersion: newest.meta.baseVersion } : p;
    }),
  );
  return { profiles: resolved, waits };
}
