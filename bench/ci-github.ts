import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { pino } from 'pino';
import { runPass, type PassDeps } from '../src/reconcile/pass.js';
import { createRunnerCi } from '../src/ci/runner-ci.js';
import type { HostConfig } from '../src/config/host-config.js';
import { createLibvirtHypervisor } from '../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { makeGen, rebuildName, templateName } from '../src/hypervisor/names.js';
import { BackoffStore } from '../src/state/backoff-store.js';
import { CiOutageStore } from '../src/state/ci-outages.js';
import { EventLog } from '../src/state/events.js';
import { startFakeGitHub, FAKE_GITHUB_TOKEN } from '../test/harness/fake-github.js';
import { metaFor } from '../test/harness/guests.js';
import { startLibvirtd } from '../test/harness/libvirtd.js';
import { cachedBase, ensureTinyBuilt, tinyProfile } from '../test/harness/tiny-profile.js';
import { median, type BenchResult } from './types.js';

/**
 * A GitHub JIT runner finishing its job: from the guest's shut-off to its replacement being
 * registered with the (fake, documented) GitHub server and then started, on the real libvirtd
 * with corral's real octokit client over loopback. The pass starts right at the shut-off: how
 * fast a pass notices one is the event-driven watch's figure, not this one.
 */
export async function benchCiGitHub(): Promise<BenchResult> {
  await ensureTinyBuilt();
  const [daemon, gh] = await Promise.all([startLibvirtd(), startFakeGitHub()]);
  const work = await mkdtemp(join(tmpdir(), 'corral-bench-ci-'));
  try {
    await writeFile(join(work, 'token'), FAKE_GITHUB_TOKEN, { mode: 0o600 });
    const log = pino({ level: 'silent' });
    const hv = createLibvirtHypervisor({ uri: daemon.uri, prefix: 'ci', imagesDir: join(work, 'images'), log });
    const tiny = {
      ...(await tinyProfile()),
      runners: 1,
      ci: {
        kind: 'github' as const,
        api: gh.url,
        scope: { kind: 'repo' as const, owner: 'acme', repo: 'widgets' },
        runnerGroupId: 1,
        labels: [],
        auth: { kind: 'token' as const, tokenFile: join(work, 'token') },
      },
    };
    const gen = makeGen(new Date(), tiny.inputsHash);
    const rebuild = rebuildName('ci', 'tiny', gen);
    const baseImage = await cachedBase(tiny, join(work, 'images'));
    await hv.startBuild({ name: rebuild, profile: tiny, meta: metaFor(tiny, gen), baseImage });
    for (;;) {
      const check = await hv.checkBuild(rebuild);
      if (check.done) {
        if (!check.verdict.ok) throw new Error(`bench build failed: ${check.verdict.reason}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    await hv.promote(rebuild, templateName('ci', 'tiny', gen));
    const clock = () => new Date();
    const deps: PassDeps = {
      config: { prefix: 'ci', keepTemplates: 2, concurrency: { builds: 1, clones: 4 }, stateDir: work } as HostConfig,
      hypervisor: hv,
      log,
      clock,
      sleep: async () => {},
      events: new EventLog(work),
      runnerBackoff: new BackoffStore(work, { initialSeconds: 60, maxSeconds: 60 }, 'runner-backoff.json'),
      backoff: new BackoffStore(work, { initialSeconds: 60, maxSeconds: 60 }),
      pollMs: 500,
      ci: createRunnerCi({ host: 'bench', log, clock, env: {} }),
      ciOutages: new CiOutageStore(work, { initialSeconds: 15, maxSeconds: 600 }),
    };
    const view = { format_version: 1 as const, hash: 'x', generation: 1, compiledAt: '', masked: [], profiles: [tiny] };
    await runPass(view, deps);
    const registered: number[] = [];
    const started: number[] = [];
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 4000)); // let the guest boot, as a runner would before its job
      const issuedBefore = gh.issued.length;
      // The job is done: GitHub removes a JIT runner's registration after its one job, the guest shuts off.
      for (const r of gh.runners.values()) if (r.name === 'ci-runner-tiny.1@bench') gh.runners.delete(r.id);
      await execa('virsh', ['-c', daemon.uri, 'destroy', 'ci-runner-tiny.1']);
      const t0 = performance.now();
      const pass = await runPass(view, deps);
      const t1 = performance.now();
      const issued = gh.issued.slice(issuedBefore).find((x) => x.name === 'ci-runner-tiny.1@bench');
      if (!issued || pass.results.some((r) => !r.ok))
        throw new Error(`bench: no replacement: ${JSON.stringify(pass.results)}`);
      registered.push(issued.at - t0);
      started.push(t1 - t0);
    }
    const med = median(registered);
    return {
      name: 'GitHub JIT runner shut off → replacement registered (real libvirt, fake GitHub over loopback)',
      figures: {
        'registered median ms': Math.round(med),
        'registered max ms': Math.round(Math.max(...registered)),
        'replacement started median ms': Math.round(median(started)),
      },
      target: { text: 'registered < 1000 ms after the pass starts', met: med < 1000 },
    };
  } finally {
    await Promise.all([daemon.stop(), gh.close()]);
    await rm(work, { recursive: true, force: true });
  }
}
