/**
 * The libvirt backend against a real, isolated libvirtd and real TCG guests of the tiny profile.
 * One daemon for the file; guests are cleaned up by the sandbox whatever happens.
 */
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLibvirtd, type Libvirtd } from '../../harness/libvirtd.js';
import { ensureTinyBuilt, tinyProfile } from '../../harness/tiny-profile.js';
import type { GuestMeta, Hypervisor } from '../../../src/hypervisor/hypervisor.js';
import { makeGen, rebuildName, runnerName, templateName } from '../../../src/hypervisor/names.js';
import type { CompiledProfile } from '../../../src/sources/view.js';
import { createLibvirtHypervisor } from '../../../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { execaExec, type Exec } from '../../../src/hypervisor/libvirt/exec.js';
import { createVirsh } from '../../../src/hypervisor/libvirt/virsh.js';
import { parseDomainXml } from '../../../src/hypervisor/libvirt/domain-xml.js';
import { readMeta } from '../../../src/hypervisor/libvirt/metadata.js';
import { rebuildDomainXml } from '../../../src/hypervisor/libvirt/build-xml.js';
import { ensureBaseImage } from '../../../src/images/base-cache.js';

const PREFIX = 'ci';
const log = pino({ level: process.env['CORRAL_TEST_LOG'] ?? 'silent' });

let daemon: Libvirtd;
let imagesDir: string;
let workDir: string;
let tiny: CompiledProfile;
const calls: { file: string; args: readonly string[]; ms?: number }[] = [];
const countingExec: Exec = async (file, args, opts) => {
  const call: (typeof calls)[number] = { file, args };
  calls.push(call);
  const t0 = performance.now();
  try {
    return await execaExec(file, args, opts);
  } finally {
    call.ms = performance.now() - t0;
  }
};
let hv: Hypervisor;

function metaFor(profile: CompiledProfile, gen: string): GuestMeta {
  return {
    profile: profile.name,
    gen,
    inputsHash: profile.inputsHash,
    baseVersion: profile.baseVersion,
    createdAt: new Date().toISOString(),
    owner: 'test-lock',
  };
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function buildToVerdict(
  profile: CompiledProfile,
  gen: string,
): Promise<{ name: string; verdict: unknown; ms: number }> {
  const name = rebuildName(PREFIX, profile.name, gen);
  const t0 = performance.now();
  await hv.startBuild({ name, profile, meta: metaFor(profile, gen) });
  const verdict = await until(`${name} to finish`, 90_000, async () => {
    const c = await hv.checkBuild(name);
    return c.done ? c.verdict : undefined;
  });
  return { name, verdict, ms: performance.now() - t0 };
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

beforeAll(async () => {
  await ensureTinyBuilt();
  daemon = await startLibvirtd();
  workDir = await mkdtemp(path.join(os.tmpdir(), 'corral-libvirt-test-'));
  imagesDir = path.join(workDir, 'images');
  tiny = await tinyProfile();
  hv = createLibvirtHypervisor({ uri: daemon.uri, prefix: PREFIX, imagesDir, log, exec: countingExec });
}, 120_000);

afterAll(async () => {
  await daemon?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe('libvirt hypervisor', () => {
  it('defines generated XML whose metadata survives define and domrename', async () => {
    const virsh = createVirsh(daemon.uri, execaExec);
    const gen = makeGen(new Date('2026-01-02T03:04:05Z'), tiny.inputsHash);
    const name = rebuildName(PREFIX, 'tiny', gen);
    const meta = metaFor(tiny, gen);
    const xml = await rebuildDomainXml({
      name,
      profile: tiny,
      meta,
      domainType: 'qemu',
      disk: '/nonexistent/disk.qcow2',
      seed: '/nonexistent/seed.iso',
      status: '/nonexistent/status',
      consoleLog: '/nonexistent/log',
    });
    await virsh.define(xml);
    const back = parseDomainXml(await virsh.run(['dumpxml', name]));
    expect(readMeta(back)).toEqual({ ok: true, meta });
    const renamed = templateName(PREFIX, 'tiny', gen);
    await virsh.run(['domrename', name, renamed]);
    expect(readMeta(parseDomainXml(await virsh.run(['dumpxml', renamed])))).toEqual({ ok: true, meta });
    await virsh.run(['undefine', renamed]);
  });

  it('builds, promotes, clones two runners that see the baked content, and destroys without leftovers', async () => {
    const gen = makeGen(new Date(), tiny.inputsHash);
    const built = await buildToVerdict(tiny, gen);
    console.info(`build boot→verdict: ${built.ms.toFixed(0)} ms`);
    expect(built.verdict).toEqual({ ok: true });

    const obs1 = await hv.observe();
    expect(obs1.guests).toEqual([
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
      await hv.createRunner({ template, name, profile: tiny, meta: { ...metaFor(tiny, gen), owner: undefined } });
      const total = performance.now() - t0;
      const start = calls.find((c) => c.args.includes('start'))?.ms ?? 0;
      const steps = calls.map(
        (c) => `${c.file} ${c.args.find((a) => !a.startsWith('-') && !a.includes('://')) ?? ''} ${c.ms?.toFixed(0)}ms`,
      );
      console.info(
        `runner ${name}: clone ${(total - start).toFixed(0)} ms + start ${start.toFixed(0)} ms [${steps.join(', ')}]`,
      );
      expect(total - start).toBeLessThan(1000);
    }
    for (const name of runners) {
      const line = await until(`${name} to boot`, 60_000, async () => {
        const m = /corral-runner: (.*)/.exec((await hv.consoleLog(name)) ?? '');
        return m?.[1];
      });
      expect(line).toBe('tiny hello v1 (from tiny 1)');
    }

    const obs2 = await hv.observe();
    expect(obs2.unrecognized).toEqual([]);
    expect(obs2.guests.map((g) => [g.name, g.role, g.state, g.gen ?? g.index, g.meta.gen]).sort()).toEqual(
      [
        [template, 'template', 'shutoff', gen, gen],
        [runners[0], 'runner', 'running', 0, gen],
        [runners[1], 'runner', 'running', 1, gen],
      ].sort(),
    );

    for (const name of [...runners, template]) await hv.destroy(name);
    await hv.destroy(runnerName(PREFIX, 'tiny', 7)); // a missing guest is fine
    expect((await hv.observe()).guests).toEqual([]);
    const left = await filesUnder(imagesDir);
    expect(left.filter((f) => !f.startsWith('base/'))).toEqual([]);
    expect(left).toEqual([`base/sha256/${tiny.baseVersion.slice('sha256:'.length)}.qcow2`]);
  }, 150_000);

  it('reports a failing provision script as a failed verdict', async () => {
    const provisionDir = path.join(workDir, 'failing-provision');
    await cp(tiny.provision.dir, provisionDir, { recursive: true });
    await writeFile(path.join(provisionDir, 'provision.sh'), '#!/bin/sh\necho "about to fail" >&2\nexit 3\n');
    const failing = await tinyProfile({ provisionDir });
    const gen = makeGen(new Date(), failing.inputsHash);
    const built = await buildToVerdict(failing, gen);
    expect(built.verdict).toEqual({ ok: false, reason: 'provision.sh exited with status 3' });
    const [guest] = (await hv.observe()).guests;
    expect(guest).toMatchObject({ name: built.name, role: 'rebuild', verdict: { ok: false } });
    expect(await hv.consoleLog(built.name)).toContain('about to fail');
    await hv.destroy(built.name);
  }, 120_000);

  it('reports a guest kernel panic as a crashed, failed build', async () => {
    const provisionDir = path.join(workDir, 'panicking-provision');
    await cp(tiny.provision.dir, provisionDir, { recursive: true });
    await writeFile(path.join(provisionDir, 'provision.sh'), '#!/bin/sh\necho c > /proc/sysrq-trigger\nsleep 60\n');
    const panicking = await tinyProfile({ provisionDir });
    const gen = makeGen(new Date(), panicking.inputsHash);
    const built = await buildToVerdict(panicking, gen);
    expect(built.verdict).toEqual({ ok: false, reason: expect.stringContaining('crashed') });
    expect((await hv.observe()).guests).toEqual([expect.objectContaining({ name: built.name, state: 'crashed' })]);
    await hv.destroy(built.name);
    expect((await filesUnder(imagesDir)).filter((f) => !f.startsWith('base/'))).toEqual([]);
  }, 120_000);

  it('never deletes a template disk that another guest still backs on', async () => {
    const virsh = createVirsh(daemon.uri, execaExec);
    const gen = makeGen(new Date(), tiny.inputsHash);
    const template = templateName(PREFIX, 'tiny', gen);
    const runner = runnerName(PREFIX, 'tiny', 5);
    const base = await ensureBaseImage(tiny, { imagesDir, exec: execaExec });
    const disk = path.join(imagesDir, 'templates', `tiny@${gen}.qcow2`);
    const runnerDisk = path.join(imagesDir, 'runners', `${runner}.qcow2`);
    for (const f of [disk, runnerDisk]) await mkdir(path.dirname(f), { recursive: true });
    await execaExec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, disk]);
    await execaExec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', disk, runnerDisk]);
    const common = {
      profile: tiny,
      meta: metaFor(tiny, gen),
      domainType: 'qemu',
      seed: '/nonexistent/s.iso',
      status: '/nonexistent/st',
      consoleLog: '/nonexistent/l',
    };
    await virsh.define(await rebuildDomainXml({ ...common, name: template, disk }));
    await virsh.define(await rebuildDomainXml({ ...common, name: runner, disk: runnerDisk }));

    await hv.destroy(template);
    expect(await filesUnder(path.join(imagesDir, 'templates'))).toEqual([path.basename(disk)]);
    await hv.destroy(runner);
    expect(await filesUnder(path.join(imagesDir, 'runners'))).toEqual([]);
    await rm(disk);
  });

  it('observes many guests with at most two virsh processes, leaving foreign and unparsable ones alone', async () => {
    const virsh = createVirsh(daemon.uri, execaExec);
    const gen = makeGen(new Date(), tiny.inputsHash);
    const template = templateName(PREFIX, 'tiny', gen);
    const baseXml = await rebuildDomainXml({
      name: template,
      profile: tiny,
      meta: metaFor(tiny, gen),
      domainType: 'qemu',
      disk: '/nonexistent/d.qcow2',
      seed: '/nonexistent/s.iso',
      status: '/nonexistent/st',
      consoleLog: '/nonexistent/l',
    });
    await virsh.define(baseXml);
    const N = 12;
    for (let i = 0; i < N; i++) {
      await virsh.define(
        baseXml
          .replace(`<name>${template}</name>`, `<name>${runnerName(PREFIX, 'tiny', i)}</name>`)
          .replace(/<uuid>.*<\/uuid>/, ''),
      );
    }
    const plain = (name: string): string =>
      `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>`;
    await virsh.define(plain('someone-elses-vm'));
    await virsh.define(plain('ci-not-a-corral-name'));
    await virsh.define(plain('ci-runner-tiny.99'));

    calls.length = 0;
    const obs = await hv.observe();
    const virshCalls = calls.filter((c) => c.file === 'virsh').length;
    console.info(`observe of ${N + 4} guests: ${virshCalls} virsh processes`);
    expect(virshCalls).toBeLessThanOrEqual(2);
    expect(obs.guests).toHaveLength(N + 1);
    expect(obs.guests.every((g) => g.meta.gen === gen && g.state === 'shutoff')).toBe(true);
    expect(obs.unrecognized.sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { name: 'ci-not-a-corral-name', reason: expect.stringContaining('naming scheme') },
      { name: 'ci-runner-tiny.99', reason: 'no corral metadata' },
    ]);
    expect(obs.guests.some((g) => g.name === 'someone-elses-vm')).toBe(false);
  });
});
