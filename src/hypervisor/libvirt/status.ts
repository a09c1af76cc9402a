/**
 * Guest state and what the guest said, from `virsh domstate --reason` and the status record
 * (what corral wrote down from the guest's org.corral.status channel, see channels.ts).
 *
 * The channel carries one word per line: a rebuild guest's verdict (`ok` / `failed: <reason>`)
 * and a runner's condition (`ready`, then `busy` / `idle` as jobs come and go).
 */
import { readFile } from 'node:fs/promises';
import type { GuestState, RunnerCondition, Verdict } from '../hypervisor.js';
import { hostErrorFor } from './channels.js';

export interface DomState {
  state: GuestState;
  reason: string;
}

/** Parses e.g. `running (booted)`, `shut off (shutdown)`, `shut off (crashed)`, `crashed (panicked)`. */
export function parseDomstate(output: string): DomState {
  const m = /^\s*([a-z ]+?)\s*(?:\(([^)]*)\))?\s*$/.exec(output.trim().split('\n')[0] ?? '');
  const word = m?.[1] ?? '';
  const reason = m?.[2] ?? '';
  if (word === 'crashed' || (word === 'shut off' && reason === 'crashed')) return { state: 'crashed', reason };
  switch (word) {
    case 'running':
    case 'in shutdown':
      return { state: 'running', reason };
    case 'shut off':
      return { state: 'shutoff', reason };
    case 'paused':
      return { state: 'paused', reason };
    default:
      return { state: 'other', reason: reason || word };
  }
}

const CONDITION_WORDS = new Set(['ready', 'busy', 'idle']);

/** A rebuild guest's verdict: the first line that is not a runner condition decides. */
export function parseVerdict(content: string): Verdict {
  const line =
    content
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '' && !CONDITION_WORDS.has(l)) ?? '';
  if (line === 'ok') return { ok: true };
  if (line.startsWith('failed:')) return { ok: false, reason: line.slice('failed:'.length).trim() || 'failed' };
  if (line === '') return { ok: false, reason: 'no verdict on the status channel' };
  return { ok: false, reason: `unexpected status line: ${line.slice(0, 200)}` };
}

/** A runner's condition: nothing said yet is `booting`; the last of ready/busy/idle decides. */
export function parseCondition(content: string): RunnerCondition {
  const words = content
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => CONDITION_WORDS.has(l));
  const last = words.at(-1);
  return last === undefined ? 'booting' : last === 'busy' ? 'busy' : 'ready';
}

/**
 * The status record's content; '' when there is none yet. Any other failure to read it is the
 * host's problem (a permission, a full disk) and is raised as a HostError naming the file; it is
 * never mistaken for a guest that said nothing.
 */
export async function readStatusRecord(statusFile: string): Promise<string> {
  try {
    return await readFile(statusFile, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return '';
    throw hostErrorFor(e, statusFile, 'read the status record');
  }
}

export async function readVerdict(statusFile: string): Promise<Verdict> {
  return parseVerdict(await readStatusRecord(statusFile));
}

/**
 * The verdict of a rebuild guest once it has stopped; undefined while it may still finish
 * (running, or paused/suspended: the provision timeout judges those).
 */
export async function verdictFor(state: DomState, statusFile: string): Promise<Verdict | undefined> {
  if (state.state === 'crashed') return { ok: false, reason: `guest crashed (${state.reason || 'crashed'})` };
  if (state.state === 'shutoff') return readVerdict(statusFile);
  return undefined;
}
