/**
 * The libvirt backend through the Hypervisor interface, against a real isolated libvirtd and real
 * TCG guests of the tiny profile: build → verdict → promote → runners → destroy, and failures.
 */
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLibvirtd, type Libvirtd } from '../../harness/libvirtd.js';
import { cachedBase, ensureTinyBuilt, tinyProfile } from '../../harness/tiny-profile.js';
import { filesUnder, metaFor, until } from '../../harness/guests.js';
import type { Hypervisor, Verdict } from '../../../src/hypervisor/hypervisor.js';
import { makeGen, rebuildName, runnerName, templateName } from '../../../src/hypervisor/names.js';
import type { CompiledProfile } from '../../../src/sources/view.js';
import { createLibvirtHypervisor } from '../../../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { execaExec, type Exec } from '../../../src/exec/exec.js';

const PREFIX = 'ci';
const log = pino({ level: process.env['CORRAL_TEST_LOG'] ?? 'silent' });

let daemon: Libvirtd | undefined;
let workDir: string;
let imagesDir: string;
let tiny: CompiledProfile;
let hv: Hypervisor;
const calls: { file: string; args: readonly string[]; ms: number }[] = [];
const timedExec: Exec = async (file, args, opts) => {
  const t0 = performance.now();
  try {
    return await execaExec(file, args, opts);
  } finally {
    calls.push({ file, args, ms: performance.now() - t0 });
  }
};

beforeAll(async () => {
  await ensureTinyBuilt();
  daemon = await startLibvirtd();
  workDir = await mkdtemp(path.join(os.tmpdir(), 'corral-lifecycle-'));
  imagesDir = path.join(workDir, 'images');
  tiny = await tinyProfile();
  hv = createLibvirtHypervisor({ uri: daemon.uri, prefix: PREFIX, imagesDir, log, exec: timedExec });
}, 120_000);

afterAll(async () => {
  await daemon?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

async function buildToVerdict(
  profile: CompiledProfile,
  gen: string,
): Promise<{ name: string; verdict: Verdict; ms: number }> {
  const name = rebuildName(PREFIX, profile.name, gen);
  const t0 = performance.now();
  await hv.startBuild({
    name,
    profile,
    meta: metaFor(profile, gen, 'test-lock'),
    baseImage: await cachedBase(profile, imagesDir),
  });
  const verdict = await until(`${name} to finish`, 90_000, async () => {
    const c = await hv.checkBuild(name);
    return c.done ? c.verdict : undefined;
  });
  return { name, verdict, ms: performance.now() - t0 };
}

async function profileWithScript(dirName: string, script: string): Promise<CompiledProfile> {
  const provisionDir = path.join(workDir, dirName);
  await cp(tiny.provision.dir, provisionDir, { recursive: true });
  await writeFile(path.join(provisionDir, 'provision.sh'), script);
  return tinyProfile({ provisionDir });
}

const nonBase = async (): Promise<string[]> => (await filesUnder(imagesDir)).filter((f) => !f.startsWith('base/'));

describe('libvirt hypervisor lifecycle', () => {
  it('builds, promotes, clones two runners that see the baked content, and destroys without leftovers', async () => {
    const gen = makeGen(new Date(), tiny.inputsHash);
    const built = await buildToVerdict(tiny, gen);
    console.info(`build start→verdict: ${built.ms.toFixed(0)} ms`);
    expect(built.verdict).toEqual({ ok: true });
    expect((await hv.observe()).guests).toEqual([
      expect.objectContaining({
        name: built.name,
        role: 'rebuild',
        profile: 'tiny',
        gen,
        state: 'shutoff',
        verdict: { ok: true },
      }),
    ]);

    const template = templateName(PREFIX, 'tiny', gen);
    await hv.promote(built.name, template);
    const runners = [runnerName(PREFIX, 'tiny', 0), runnerName(PREFIX, 'tiny', 1)];
    for (const name of runners) {
      calls.length = 0;
      const t0 = performance.now();
      await hv.createRunner({ template, name, profile: tiny, meta: metaFor(tiny, gen) });
      const total = performance.now() - t0;
      const start = calls.find((c) => c.args.includes('start'))?.ms ?? 0;
      const steps = calls.map(
        (c) => `${c.file} ${c.args.find((a) => /^[a-z]/.test(a) && !a.includes('://'))} ${c.ms.toFixed(0)}ms`,
      );
      console.info(
        `${name}: clone ${(total - start).toFixed(0)} ms + start ${start.toFixed(0)} ms [${steps.join(', ')}]`,
      );
      expect(total - start).toBeLessThan(1000); // generous: the other runner boots on the same 2 cores
    }
    for (const name of runners) {
      const line = await until(
        `${name} to boot`,
        60_000,
        async () => /corral-runner: (.*)/.exec((await hv.consoleLog(name)) ?? '')?.[1],
      );
      expect(line).toBe('tiny hello v1 (from tiny 1)');
    }

    const obs = await hv.observe();
    expect(obs.unrecognized).toEqual([]);
    const seen = obs.guests.map((g) => [g.name, g.role, g.state, g.gen ?? g.index, g.meta.gen]);
    expect(seen.sort()).toEqual(
      [
        [template, 'template', 'shutoff', gen, gen],
        [runners[0], 'runner', 'running', 0, gen],
        [runners[1], 'runner', 'running', 1, gen],
      ].sort(),
    );

    for (const name of [...runners, template]) await hv.destroy(name);
    await hv.destroy(runnerName(PREFIX, 'tiny', 7)); // a missing guest is fine
    expect((await hv.observe()).guests).toEqual([]);
    const hex = tiny.baseVersion.slice('sha256:'.length);
    expect(await filesUnder(imagesDir)).toEqual([`base/sha256/${hex}.json`, `base/sha256/${hex}.qcow2`]);
  }, 150_000);

  it('reports a failing provision script as a failed verdict and keeps its console output', async () => {
    const failing = await profileWithScript('failing', '#!/bin/sh\necho "about to fail" >&2\nexit 3\n');
    const built = await buildToVerdict(failing, makeGen(new Date(), failing.inputsHash));
    expect(built.verdict).toEqual({ ok: false, reason: 'provision.sh exited with status 3' });
    expect((await hv.observe()).guests).toEqual([
      expect.objectContaining({ name: built.name, role: 'rebuild', state: 'shutoff', verdict: built.verdict }),
    ]);
    expect(await hv.consoleLog(built.name)).toContain('about to fail');
    await hv.destroy(built.name);
    expect(await nonBase()).toEqual([]);
  }, 120_000);

  it('reports a guest kernel panic as a crashed, failed build', async () => {
    const panicking = await profileWithScript('panicking', '#!/bin/sh\necho c > /proc/sysrq-trigger\nsleep 60\n');
    const built = await buildToVerdict(panicking, makeGen(new Date(), panicking.inputsHash));
    expect(built.verdict).toEqual({ ok: false, reason: expect.stringContaining('crashed') });
    expect((await hv.observe()).guests).toEqual([expect.objectContaining({ name: built.name, state: 'crashed' })]);
    await hv.destroy(built.name);
    expect(await nonBase()).toEqual([]);
  }, 120_000);

  it('judges a vanished rebuild guest as failed', async () => {
    const name = rebuildName(PREFIX, 'tiny', makeGen(new Date(), tiny.inputsHash));
    expect(await hv.checkBuild(name)).toEqual({ done: true, verdict: { ok: false, reason: 'guest vanished' } });
  });
});
