/**
 * Parsers for the two listings that start every observation: `list --all --uuid --name` (who is
 * there) and `domstats --state` (the state of every guest in one call, instead of a `domstate`
 * per guest).
 */
import type { DomState } from './status.js';

/** name → uuid, from lines `<uuid> <name>`. */
export function parseUuidList(out: string): Map<string, string> {
  const byName = new Map<string, string>();
  for (const line of out.split('\n')) {
    const m = /^\s*([0-9a-f-]{36})\s+(.+?)\s*$/.exec(line);
    if (m) byName.set(m[2]!, m[1]!);
  }
  return byName;
}

// virDomainState and its reasons, from libvirt's public (stable) API.
const STATE: Record<number, DomState['state']> = {
  1: 'running',
  2: 'running',
  3: 'paused',
  4: 'running',
  5: 'shutoff',
  6: 'crashed',
};
const SHUTOFF_REASON: Record<number, string> = {
  0: 'unknown',
  1: 'shutdown',
  2: 'destroyed',
  3: 'crashed',
  4: 'migrated',
  5: 'saved',
  6: 'failed',
  7: 'from snapshot',
  8: 'daemon',
};
const CRASHED_REASON: Record<number, string> = { 0: 'unknown', 1: 'panicked' };

export function domStateFromNumbers(state: number, reason: number): DomState {
  const s = STATE[state] ?? 'other';
  if (s === 'shutoff') {
    const r = SHUTOFF_REASON[reason] ?? String(reason);
    return r === 'crashed' ? { state: 'crashed', reason: r } : { state: 'shutoff', reason: r };
  }
  if (s === 'crashed') return { state: 'crashed', reason: CRASHED_REASON[reason] ?? String(reason) };
  return { state: s, reason: String(reason) };
}

/** name → state, from blocks `Domain: '<name>'` / `  state.state=N` / `  state.reason=M`. */
export function parseDomstats(out: string): Map<string, DomState> {
  const states = new Map<string, DomState>();
  let name: string | undefined;
  let state: number | undefined;
  let reason = 0;
  const flush = (): void => {
    if (name !== undefined && state !== undefined) states.set(name, domStateFromNumbers(state, reason));
    name = undefined;
    state = undefined;
    reason = 0;
  };
  for (const line of out.split('\n')) {
    const dom = /^Domain: '(.*)'\s*$/.exec(line);
    if (dom) {
      flush();
      name = dom[1];
      continue;
    }
    const kv = /^\s+state\.(state|reason)=(\d+)\s*$/.exec(line);
    if (kv?.[1] === 'state') state = Number(kv[2]);
    else if (kv?.[1] === 'reason') reason = Number(kv[2]);
  }
  flush();
  return states;
}
