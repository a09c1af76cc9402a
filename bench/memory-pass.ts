import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { buildsDone } from '../src/apply/apply.js';
import { runPass } from '../src/reconcile/pass.js';
import { MemoryHypervisor } from '../src/hypervisor/memory/memory-hypervisor.js';
import { BackoffStore } from '../src/state/backoff-store.js';
import { EventLog } from '../src/state/events.js';
import type { CompiledView } from '../src/sources/view.js';
import type { HostConfig } from '../src/config/host-config.js';
import { aProfile } from '../test/builders/guests.js';
import { median, timeMs, type BenchResult } from './types.js';

/** A no-op pass (observe + plan + apply nothing) over 1,000 running runners on the memory backend. */
export async function benchMemoryPass(): Promise<BenchResult> {
  const stateDir = await mkdtemp(join(tmpdir(), 'corral-bench-pass-'));
  try {
    const now = () => new Date('2026-11-24T12:00:00Z');
    const view: CompiledView = {
      format_version: 1,
      hash: 'x',
      generation: 1,
      compiledAt: '',
      masked: [],
      profiles: Array.from({ length: 100 }, (_, i) => aProfile(`p${i}`).runners(10).build()),
    };
    const config = { prefix: 'ci', keepTemplates: 2, concurrency: { builds: 2, clones: 8 } } as HostConfig;
    const deps = {
      config,
      hypervisor: new MemoryHypervisor({ prefix: 'ci', clock: now }),
      log: pino({ level: 'silent' }),
      clock: now,
      sleep: async () => {},
      events: new EventLog(stateDir),
      backoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 3600 }),
      runnerBackoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 3600 }, 'runner-backoff.json'),
      pollMs: 0,
    };
    for (let i = 0; i < 3; i++) await buildsDone((await runPass(view, deps)).builds);
    const check = await runPass(view, deps);
    if (check.plan.actions.length > 0) throw new Error('bench memory pass: fleet did not converge');
    const cpu: number[] = [];
    const wall: number[] = [];
    for (let i = 0; i < 10; i++) {
      const before = process.cpuUsage();
      wall.push((await timeMs(() => runPass(view, deps))).ms);
      const used = process.cpuUsage(before);
      cpu.push((used.user + used.system) / 1000);
    }
    const cpuMs = median(cpu);
    return {
      name: 'no-op pass, 1,000 runners (memory backend)',
      figures: { 'median wall ms': Math.round(median(wall)), 'median cpu ms': Math.round(cpuMs) },
      target: { text: '< 200 ms cpu', met: cpuMs < 200 },
    };
  } finally {
    await rm(stateDir, { recursive: true, force: true });
  }
}
