/**
 * One observation pass in at most two virsh processes, however many guests (DESIGN.md §5, §9):
 * 1. `list --all --uuid --name` and `domstats --state`, batched: who is there and in what state;
 * 2. `metadata --uri <ours>` for each of our guests whose metadata is not yet known, batched.
 * corral never changes a guest's metadata after define, so it is memoized by domain UUID (a new
 * guest, even under an old name, has a new UUID): a steady-state pass is one process.
 * Foreign guests are never queried; ours that do not parse are reported, never touched.
 */
import { CommandError } from '../../errors.js';
import type { GuestMeta, Observation, ObservedGuest } from '../hypervisor.js';
import { hasPrefix, parseName, type ParsedName } from '../names.js';
import { parseDomstats, parseUuidList } from './domstats.js';
import { CORRAL_XMLNS, parseMetaElement, type MetaResult } from './metadata.js';
import { filesForName, type ImageLayout } from './paths.js';
import { parseCondition, readStatusRecord, verdictFor, type DomState } from './status.js';
import { stat } from 'node:fs/promises';
import { virshQuote, type Virsh } from './virsh.js';

export interface ObserveContext {
  virsh: Virsh;
  prefix: string;
  layout: ImageLayout;
  /** UUID → metadata, owned by the hypervisor instance; pruned to the guests that still exist. */
  metaMemo: Map<string, GuestMeta>;
}

export async function listNames(virsh: Virsh): Promise<string[]> {
  const out = await virsh.run(['list', '--all', '--name']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
}

interface Candidate {
  name: string;
  uuid: string;
  parsed: ParsedName;
  state: DomState;
}

export async function observeGuests(ctx: ObserveContext): Promise<Observation> {
  const listing = await ctx.virsh.batch(['list --all --uuid --name', 'domstats --state']);
  // A failed listing must never read as "no guests": the planner would recreate everything.
  if (listing.stderr.includes('error:')) {
    throw new CommandError(
      `virsh listing failed: ${listing.stderr.trim().split('\n')[0]}`,
      'virsh list; domstats',
      undefined,
      listing.stderr,
    );
  }
  const uuids = parseUuidList(listing.out[0] ?? '');
  const states = parseDomstats(listing.out[1] ?? '');
  const present = new Set(uuids.values());
  for (const uuid of ctx.metaMemo.keys()) if (!present.has(uuid)) ctx.metaMemo.delete(uuid);

  const result: Observation = { guests: [], unrecognized: [] };
  const candidates: Candidate[] = [];
  for (const [name, uuid] of uuids) {
    if (!hasPrefix(ctx.prefix, name)) continue;
    const parsed = parseName(ctx.prefix, name);
    const state = states.get(name);
    if (!parsed) result.unrecognized.push({ name, reason: "name does not follow corral's naming scheme" });
    else if (state) candidates.push({ name, uuid, parsed, state }); // no state: it went away meanwhile
  }

  const unknown = candidates.filter((c) => !ctx.metaMemo.has(c.uuid));
  const { out } = await ctx.virsh.batch(
    unknown.map((c) => `metadata ${virshQuote(c.name)} --uri ${virshQuote(CORRAL_XMLNS)}`),
  );
  const fetched = new Map<string, MetaResult>(unknown.map((c, i) => [c.uuid, parseMetaElement(out[i] ?? '')]));

  for (const c of candidates) {
    const memo = ctx.metaMemo.get(c.uuid);
    const meta: MetaResult = memo
      ? { ok: true, meta: memo }
      : (fetched.get(c.uuid) ?? { ok: false, reason: 'no corral metadata' });
    const judged = await judge(ctx, c, meta);
    if ('reason' in judged) result.unrecognized.push({ name: c.name, reason: judged.reason });
    else {
      ctx.metaMemo.set(c.uuid, judged.meta);
      result.guests.push(judged);
    }
  }
  return result;
}

async function judge(ctx: ObserveContext, c: Candidate, meta: MetaResult): Promise<ObservedGuest | { reason: string }> {
  const { name, parsed, state } = c;
  if (!meta.ok) return { reason: meta.reason };
  if (meta.meta.profile !== parsed.profile) {
    return { reason: `metadata names profile ${meta.meta.profile}, the name says ${parsed.profile}` };
  }
  if (parsed.role !== 'runner' && meta.meta.gen !== parsed.gen) {
    return { reason: `metadata names generation ${meta.meta.gen}, the name says ${parsed.gen}` };
  }
  const guest: ObservedGuest = {
    name,
    role: parsed.role,
    profile: parsed.profile,
    state: state.state,
    meta: meta.meta,
  };
  if (parsed.role === 'runner') {
    guest.index = parsed.index;
    const statusFile = filesForName(ctx.layout, ctx.prefix, name)?.status;
    if (state.state === 'running' && statusFile) {
      guest.condition = parseCondition(await readStatusRecord(statusFile));
      const since = await stat(statusFile).catch(() => undefined);
      if (since) guest.conditionSince = since.mtime.toISOString();
    }
  } else guest.gen = parsed.gen;
  if (parsed.role === 'rebuild') {
    // startBuild always points the status channel here, so no domain XML is needed.
    const statusFile = filesForName(ctx.layout, ctx.prefix, name)?.status;
    const verdict = statusFile ? await verdictFor(state, statusFile) : undefined;
    if (verdict) guest.verdict = verdict;
  }
  return guest;
}
