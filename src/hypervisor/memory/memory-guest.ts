import type { GuestMeta, GuestState, RunnerCondition, Verdict } from '../hypervisor.js';

export type BuildOutcome = 'succeed' | 'fail' | 'hang' | 'crash';
export type Method = 'observe' | 'startBuild' | 'checkBuild' | 'promote' | 'createRunner' | 'destroy';

export interface MemoryGuest {
  name: string;
  state: GuestState;
  /** Absent on guests corral does not own (they have no metadata). */
  meta?: GuestMeta;
  verdict?: Verdict;
  /** ISO time at which a running build finishes; builds follow the injected clock. */
  finishAt?: string;
  outcome?: BuildOutcome;
  /** Disk file names this guest owns; `backing` maps a disk to the one it overlays. */
  disks: string[];
  console: string[];
  /**
   * What a running runner says (booting / ready / busy), set by tests and demos through
   * MemoryHypervisor.setCondition; absent: the backend cannot tell, which counts as ready.
   */
  condition?: RunnerCondition;
  conditionSince?: string;
}

export interface MemoryState {
  guests: MemoryGuest[];
  backing: Record<string, string>;
}

/** A running build whose time has come shuts off with its verdict (or crashes); true when it did. */
export function finishBuildIfDue(g: MemoryGuest, now: number): boolean {
  if (g.state !== 'running' || !g.finishAt || g.outcome === 'hang' || Date.parse(g.finishAt) > now) return false;
  delete g.finishAt;
  if (g.outcome === 'crash') {
    g.state = 'crashed';
    g.verdict = { ok: false, reason: 'guest crashed' };
  } else {
    g.state = 'shutoff';
    g.verdict = g.outcome === 'fail' ? { ok: false, reason: 'provision script exited with status 1' } : { ok: true };
  }
  g.console.push(g.verdict.ok ? 'ok' : `failed: ${g.verdict.reason}`);
  return true;
}
