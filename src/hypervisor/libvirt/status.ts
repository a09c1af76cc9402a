/** Guest state and the provisioning verdict, from `virsh domstate --reason` and the status channel file. */
import { readFile } from 'node:fs/promises';
import type { GuestState, Verdict } from '../hypervisor.js';

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

/** What the guest wrote to org.corral.status: the first line decides. */
export function parseVerdict(content: string): Verdict {
  const line =
    content
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim() ?? '';
  if (line === 'ok') return { ok: true };
  if (line.startsWith('failed:')) return { ok: false, reason: line.slice('failed:'.length).trim() || 'failed' };
  if (line === '') return { ok: false, reason: 'no verdict on the status channel' };
  return { ok: false, reason: `unexpected status line: ${line.slice(0, 200)}` };
}

export async function readVerdict(statusFile: string): Promise<Verdict> {
  try {
    return parseVerdict(await readFile(statusFile, 'utf8'));
  } catch {
    return { ok: false, reason: 'no verdict on the status channel' };
  }
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
