/**
 * One observation pass: `virsh list` plus ONE batched virsh process for the XML and state of every
 * guest with our prefix (DESIGN.md §5), however many guests there are. Foreign guests are never
 * queried; ours that do not parse are reported as unrecognized, never touched.
 */
import type { Observation, ObservedGuest } from '../hypervisor.js';
import { hasPrefix, parseName, type ParsedName } from '../names.js';
import { parseDomainXml, type DomainDoc } from './domain-xml.js';
import { statusFileOf } from './devices-xml.js';
import { readMeta } from './metadata.js';
import { filesForName, type ImageLayout } from './paths.js';
import { parseDomstate, verdictFor } from './status.js';
import { virshQuote, type Virsh } from './virsh.js';

export interface ObserveContext {
  virsh: Virsh;
  prefix: string;
  layout: ImageLayout;
}

export async function listNames(virsh: Virsh): Promise<string[]> {
  const out = await virsh.run(['list', '--all', '--name']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

export async function observeGuests(ctx: ObserveContext): Promise<Observation> {
  const result: Observation = { guests: [], unrecognized: [] };
  const candidates: { name: string; parsed: ParsedName }[] = [];
  for (const name of await listNames(ctx.virsh)) {
    if (!hasPrefix(ctx.prefix, name)) continue;
    const parsed = parseName(ctx.prefix, name);
    if (parsed) candidates.push({ name, parsed });
    else result.unrecognized.push({ name, reason: "name does not follow corral's naming scheme" });
  }
  const outputs = await ctx.virsh.batch(
    candidates.flatMap(({ name }) => [`dumpxml ${virshQuote(name)}`, `domstate --reason ${virshQuote(name)}`]),
  );
  for (const [i, { name, parsed }] of candidates.entries()) {
    const xml = outputs[2 * i] ?? '';
    const state = outputs[2 * i + 1] ?? '';
    // Empty output: the guest went away between list and dumpxml, so it is simply not there now.
    if (xml === '' || state === '') continue;
    const judged = await judge(ctx, name, parsed, xml, state);
    if ('reason' in judged) result.unrecognized.push({ name, reason: judged.reason });
    else result.guests.push(judged);
  }
  return result;
}

async function judge(
  ctx: ObserveContext,
  name: string,
  parsed: ParsedName,
  xml: string,
  stateText: string,
): Promise<ObservedGuest | { reason: string }> {
  let doc: DomainDoc;
  try {
    doc = parseDomainXml(xml);
  } catch (err) {
    return { reason: `unreadable domain XML: ${(err as Error).message}` };
  }
  const meta = readMeta(doc);
  if (!meta.ok) return { reason: meta.reason };
  if (meta.meta.profile !== parsed.profile) {
    return { reason: `metadata names profile ${meta.meta.profile}, the name says ${parsed.profile}` };
  }
  if (parsed.role !== 'runner' && meta.meta.gen !== parsed.gen) {
    return { reason: `metadata names generation ${meta.meta.gen}, the name says ${parsed.gen}` };
  }
  const state = parseDomstate(stateText);
  const guest: ObservedGuest = {
    name,
    role: parsed.role,
    profile: parsed.profile,
    state: state.state,
    meta: meta.meta,
  };
  if (parsed.role === 'runner') guest.index = parsed.index;
  else guest.gen = parsed.gen;
  if (parsed.role === 'rebuild') {
    const statusFile = statusFileOf(doc) ?? filesForName(ctx.layout, ctx.prefix, name)?.status;
    const verdict = statusFile ? await verdictFor(state, statusFile) : undefined;
    if (verdict) guest.verdict = verdict;
  }
  return guest;
}
