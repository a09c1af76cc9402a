/**
 * The one place that decides what an observed guest is. Backends only report raw facts per guest
 * (name, state, its corral metadata or why it did not parse, the build verdict); this decides role,
 * profile and ownership, and which guests with our prefix are "unrecognized, with reason" — the
 * same way for every backend, so the memory backend that the property test trusts cannot drift
 * from libvirt (docs/design.md, "Observation").
 */
import type { GuestState, MetaResult, Observation, ObservedGuest, RunnerCondition, Verdict } from './hypervisor.js';
import { hasPrefix, parseName } from './names.js';

export interface RawGuest {
  name: string;
  state: GuestState;
  /** corral's metadata on the guest, or why there is none usable. */
  meta: MetaResult;
  /** For a rebuild guest that has stopped: what its status channel said. */
  verdict?: Verdict;
  /** For a running runner: what it last said on its status channel, and since when. */
  condition?: RunnerCondition;
  conditionSince?: string;
}

export const UNRECOGNIZED = {
  name: "name does not follow corral's naming scheme",
  noMeta: 'no corral metadata',
} as const;

export function classify(prefix: string, raws: Iterable<RawGuest>): Observation {
  const result: Observation = { guests: [], unrecognized: [] };
  for (const raw of raws) {
    if (!hasPrefix(prefix, raw.name)) continue;
    const judged = classifyOne(prefix, raw);
    if ('reason' in judged) result.unrecognized.push({ name: raw.name, reason: judged.reason });
    else result.guests.push(judged);
  }
  result.guests.sort((a, b) => a.name.localeCompare(b.name));
  result.unrecognized.sort((a, b) => a.name.localeCompare(b.name));
  return result;
}

function classifyOne(prefix: string, raw: RawGuest): ObservedGuest | { reason: string } {
  const parsed = parseName(prefix, raw.name);
  if (!parsed) return { reason: UNRECOGNIZED.name };
  if (!raw.meta.ok) return { reason: raw.meta.reason };
  const meta = raw.meta.meta;
  if (meta.profile !== parsed.profile) {
    return { reason: `metadata names profile ${meta.profile}, the name says ${parsed.profile}` };
  }
  if (parsed.role !== 'runner' && meta.gen !== parsed.gen) {
    return { reason: `metadata names generation ${meta.gen}, the name says ${parsed.gen}` };
  }
  const guest: ObservedGuest = {
    name: raw.name,
    role: parsed.role,
    profile: parsed.profile,
    state: raw.state,
    meta: { ...meta },
  };
  if (parsed.role === 'runner') {
    guest.index = parsed.index;
    if (raw.condition) guest.condition = raw.condition;
    if (raw.conditionSince) guest.conditionSince = raw.conditionSince;
  } else guest.gen = parsed.gen;
  if (parsed.role === 'rebuild') {
    const stopped = raw.state === 'shutoff' || raw.state === 'crashed';
    if (raw.verdict) guest.verdict = raw.verdict;
    else if (stopped) guest.verdict = { ok: false, reason: 'stopped without a verdict' };
  }
  return guest;
}
