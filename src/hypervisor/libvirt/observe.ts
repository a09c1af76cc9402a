/**
 * One observation pass in at most two virsh processes, however many guests (docs/design.md, "Observation"):
 * 1. `list --all --uuid --name` and `domstats --state`, batched: who is there and in what state;
 * 2. `metadata --uri <ours>` for each of our guests whose metadata is not yet known, batched.
 * corral never changes a guest's metadata after define, so it is memoized by domain UUID (a new
 * guest, even under an old name, has a new UUID): a steady-state pass is one process.
 * Foreign guests are never queried. What a guest is (role, profile, unrecognized and why) is
 * decided by the shared classifier, not here.
 */
import { CommandError } from '../../errors.js';
import { classify, UNRECOGNIZED, type RawGuest } from '../classify.js';
import type { GuestMeta, MetaResult, Observation, Verdict } from '../hypervisor.js';
import { hasPrefix, parseName, type ParsedName } from '../names.js';
import { parseDomstats, parseUuidList } from './domstats.js';
import { CORRAL_XMLNS, parseMetaElement } from './metadata.js';
import { filesForName, type ImageLayout } from './paths.js';
import { parseCondition, readStatusRecord, verdictFor, type DomState } from './status.js';
import { stat } from 'node:fs/promises';
import { lostConnection, virshQuote, type Virsh } from './virsh.js';

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
    const failure = new CommandError(`virsh listing failed: ${listing.stderr.trim().split('\n')[0]}`, {
      command: 'virsh list; domstats',
      stderr: listing.stderr,
    });
    throw lostConnection(failure) ?? failure;
  }
  const uuids = parseUuidList(listing.out[0] ?? '');
  const states = parseDomstats(listing.out[1] ?? '');
  const present = new Set(uuids.values());
  for (const uuid of ctx.metaMemo.keys()) if (!present.has(uuid)) ctx.metaMemo.delete(uuid);

  const raws: RawGuest[] = [];
  const candidates: Candidate[] = [];
  for (const [name, uuid] of uuids) {
    if (!hasPrefix(ctx.prefix, name)) continue;
    const state = states.get(name);
    const parsed = parseName(ctx.prefix, name);
    // Only guests whose name parses are worth a metadata query; the classifier names the others.
    if (!parsed) raws.push({ name, state: state?.state ?? 'other', meta: { ok: false, reason: 'not read' } });
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
      : (fetched.get(c.uuid) ?? { ok: false, reason: UNRECOGNIZED.noMeta });
    if (meta.ok) ctx.metaMemo.set(c.uuid, meta.meta);
    const verdict = c.parsed.role === 'rebuild' ? await rebuildVerdict(ctx, c) : undefined;
    const condition = c.parsed.role === 'runner' ? await runnerCondition(ctx, c) : {};
    raws.push({ name: c.name, state: c.state.state, meta, ...(verdict ? { verdict } : {}), ...condition });
  }
  return classify(ctx.prefix, raws);
}

/** startBuild always points the status channel at the guest's status file, so no domain XML is needed. */
async function rebuildVerdict(ctx: ObserveContext, c: Candidate): Promise<Verdict | undefined> {
  const statusFile = filesForName(ctx.layout, ctx.prefix, c.name)?.status;
  return statusFile ? verdictFor(c.state, statusFile) : undefined;
}

/** What a running runner last said on its status channel (and when), from the file corral copies it into. */
async function runnerCondition(
  ctx: ObserveContext,
  c: Candidate,
): Promise<Pick<RawGuest, 'condition' | 'conditionSince'>> {
  const statusFile = filesForName(ctx.layout, ctx.prefix, c.name)?.status;
  if (c.state.state !== 'running' || !statusFile) return {};
  const condition = parseCondition(await readStatusRecord(statusFile));
  const since = await stat(statusFile).catch(() => undefined);
  return { condition, ...(since ? { conditionSince: since.mtime.toISOString() } : {}) };
}
