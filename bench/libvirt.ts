import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { runPass } from '../src/reconcile/pass.js';
import { createLibvirtHypervisor } from '../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { execaExec, type Exec } from '../src/exec/exec.js';
import { makeGen, rebuildName, runnerName, templateName } from '../src/hypervisor/names.js';
import type { HostConfig } from '../src/config/host-config.js';
import { BackoffStore } from '../src/state/backoff-store.js';
import { EventLog } from '../src/state/events.js';
import { startLibvirtd } from '../test/harness/libvirtd.js';
import { cachedBase, ensureTinyBuilt, tinyProfile } from '../test/harness/tiny-profile.js';
import { metaFor } from '../test/harness/guests.js';
import { median, timeMs, type BenchResult } from './types.js';

/**
 * Real libvirt: runner clone time (overlay + XML + define, the `virsh start` excluded), 8 runners
 * created serially vs in parallel (start included), and virsh processes for a no-op pass over 20 guests.
 */
export async function benchLibvirt(): Promise<BenchResult[]> {
  await ensureTinyBuilt();
  const daemon = await startLibvirtd();
  const work = await mkdtemp(join(tmpdir(), 'corral-bench-lv-'));
  const calls: { args: readonly string[]; ms: number }[] = [];
  const exec: Exec = async (file, args, opts) => {
    const t = await timeMs(() => execaExec(file, args, opts));
    calls.push({ args: [file, ...args], ms: t.ms });
    return t.value;
  };
  try {
    const log = pino({ level: 'silent' });
    const hv = createLibvirtHypervisor({ uri: daemon.uri, prefix: 'ci', imagesDir: join(work, 'images'), log, exec });
    const tiny = { ...(await tinyProfile()), runners: 19 };
    const gen = makeGen(new Date(), tiny.inputsHash);
    const baseImage = await cachedBase(tiny, join(work, 'images'));
    await hv.startBuild({ name: rebuildName('ci', 'tiny', gen), profile: tiny, meta: metaFor(tiny, gen), baseImage });
    for (;;) {
      const check = await hv.checkBuild(rebuildName('ci', 'tiny', gen));
      if (check.done) {
        if (!check.verdict.ok) throw new Error(`bench build failed: ${check.verdict.reason}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    const template = templateName('ci', 'tiny', gen);
    await hv.promote(rebuildName('ci', 'tiny', gen), template);
    const create = (i: number) =>
      hv.createRunner({
        template,
        name: runnerName('ci', 'tiny', i),
        profile: tiny,
        meta: { ...metaFor(tiny, gen), createdAt: new Date().toISOString() },
      });
    const runners = [1, 2, 3, 4, 5, 6, 7, 8];

    // Clone cost = createRunner minus its `virsh start`. On a quiet host first (each earlier runner
    // has finished booting), then back to back while earlier runners boot under TCG and load both cores.
    const cloneOf = async (i: number) => {
      const before = calls.length;
      const t = await timeMs(() => create(i));
      return t.ms - (calls.slice(before).find((c) => c.args.includes('start'))?.ms ?? 0);
    };
    const quiet: number[] = [];
    for (const i of [1, 2, 3, 4, 5]) {
      await new Promise((r) => setTimeout(r, 6000));
      quiet.push(await cloneOf(i));
    }
    await Promise.all([1, 2, 3, 4, 5].map((i) => hv.destroy(runnerName('ci', 'tiny', i))));
    await new Promise((r) => setTimeout(r, 3000));
    const clones: number[] = [];
    const serial = await timeMs(async () => {
      for (const i of runners) clones.push(await cloneOf(i));
    });
    await Promise.all(runners.map((i) => hv.destroy(runnerName('ci', 'tiny', i))));
    const parallel = await timeMs(() => Promise.all(runners.map(create)));

    for (let i = 9; i <= 19; i++) await create(i);
    const config = { prefix: 'ci', keepTemplates: 2, concurrency: { builds: 1, clones: 4 } } as HostConfig;
    const view = { format_version: 1 as const, hash: 'x', generation: 1, compiledAt: '', masked: [], profiles: [tiny] };
    const deps = {
      config,
      hypervisor: hv,
      log,
      clock: () => new Date(),
      sleep: async () => {},
      events: new EventLog(work),
      backoff: new BackoffStore(work, { initialSeconds: 60, maxSeconds: 60 }),
      runnerBackoff: new BackoffStore(work, { initialSeconds: 60, maxSeconds: 60 }, 'runner-backoff.json'),
      pollMs: 500,
    };
    const passes: { processes: number; actions: number; ms: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const before = calls.length;
      const t = await timeMs(() => runPass(view, deps));
      passes.push({ processes: calls.length - before, actions: t.value.plan.actions.length, ms: t.ms });
    }
    if (passes.some((p) => p.actions > 0))
      throw new Error(`bench: the 20-guest pass was not a no-op: ${JSON.stringify(passes)}`);
    const cloneMedian = median(quiet);
    const byCommand = (word: string) => median(calls.filter((c) => c.args.includes(word)).map((c) => c.ms));
    const steady = Math.max(...passes.slice(1).map((p) => p.processes));
    return [
      {
        name: 'runner clone, real libvirt (overlay + XML + define)',
        figures: {
          'quiet host median ms': Math.round(cloneMedian),
          'while 1-7 runners boot, median ms': Math.round(median(clones)),
          'max ms': Math.round(Math.max(...clones)),
          'qemu-img create median ms': Math.round(byCommand('create')),
          'virsh define median ms': Math.round(byCommand('define')),
          'virsh start median ms': Math.round(byCommand('start')),
        },
        target: { text: '< 150 ms on a quiet host', met: cloneMedian < 150 },
      },
      {
        name: '8 runners created (clone + start), real libvirt',
        figures: {
          'serial ms': Math.round(serial.ms),
          'parallel ms': Math.round(parallel.ms),
          'serial/parallel ratio': Number((serial.ms / parallel.ms).toFixed(2)),
        },
        target: { text: 'parallel faster', met: parallel.ms < serial.ms },
      },
      {
        name: 'no-op pass over 20 real guests',
        figures: {
          'virsh processes (first pass)': passes[0]!.processes,
          'virsh processes (steady)': steady,
          'steady pass ms': Math.round(median(passes.slice(1).map((p) => p.ms))),
        },
        target: { text: '≤ 2 processes', met: passes[0]!.processes <= 2 && steady <= 2 },
      },
    ];
  } finally {
    await daemon.stop();
    await rm(work, { recursive: true, force: true });
  }
}
