/**
 * Observation, metadata and file ownership against a real isolated libvirtd, with guests that are
 * defined but never started (no boot needed, so this file is fast).
 */
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLibvirtd, type Libvirtd } from '../../harness/libvirtd.js';
import { cachedBase, ensureTinyBuilt, tinyProfile } from '../../harness/tiny-profile.js';
import { filesUnder, metaFor } from '../../harness/guests.js';
import type { Hypervisor } from '../../../src/hypervisor/hypervisor.js';
import { makeGen, rebuildName, runnerName, templateName } from '../../../src/hypervisor/names.js';
import type { CompiledProfile } from '../../../src/sources/view.js';
import { createLibvirtHypervisor } from '../../../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { execaExec, type Exec } from '../../../src/exec/exec.js';
import { createVirsh, type Virsh } from '../../../src/hypervisor/libvirt/virsh.js';
import { parseDomainXml } from '../../../src/hypervisor/libvirt/domain-xml.js';
import { readMeta } from '../../../src/hypervisor/libvirt/metadata.js';
import { rebuildDomainXml, type BuildXmlInput } from '../../../src/hypervisor/libvirt/build-xml.js';
import { CommandError } from '../../../src/errors.js';

const PREFIX = 'ci';
const log = pino({ level: 'silent' });

let daemon: Libvirtd | undefined;
let workDir: string;
let imagesDir: string;
let tiny: CompiledProfile;
let hv: Hypervisor;
let virsh: Virsh;
const spawned: string[] = [];
const inputs: string[] = [];
const countingExec: Exec = (file, args, opts) => {
  spawned.push(file);
  inputs.push(opts?.input ?? '');
  return execaExec(file, args, opts);
};

beforeAll(async () => {
  await ensureTinyBuilt();
  daemon = await startLibvirtd();
  workDir = await mkdtemp(path.join(os.tmpdir(), 'corral-observe-'));
  imagesDir = path.join(workDir, 'images');
  tiny = await tinyProfile();
  hv = createLibvirtHypervisor({ uri: daemon.uri, prefix: PREFIX, imagesDir, log, exec: countingExec });
  virsh = createVirsh(daemon.uri, execaExec);
}, 120_000);

afterAll(async () => {
  await daemon?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Domain XML as startBuild writes it, with files that need not exist for a guest that never starts. */
function xmlFor(name: string, gen: string, over: Partial<BuildXmlInput> = {}): Promise<string> {
  return rebuildDomainXml({
    name,
    profile: tiny,
    meta: metaFor(tiny, gen, 'lock-1'),
    domainType: 'qemu',
    disk: '/nonexistent/disk.qcow2',
    seed: '/nonexistent/seed.iso',
    statusSocket: '/nonexistent/status.sock',
    consoleSocket: '/nonexistent/console.sock',
    owner: { uid: 0, gid: 0 },
    ...over,
  });
}

const plainXml = (name: string): string =>
  `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><os><type>hvm</type></os></domain>`;

describe('libvirt observation and ownership', () => {
  it('keeps corral metadata through define and domrename', async () => {
    const gen = makeGen(new Date('2026-01-02T03:04:05Z'), tiny.inputsHash);
    const name = rebuildName(PREFIX, 'tiny', gen);
    const meta = metaFor(tiny, gen, 'lock-1');
    await virsh.define(await xmlFor(name, gen, { meta }));
    expect(readMeta(parseDomainXml(await virsh.run(['dumpxml', name])))).toEqual({ ok: true, meta });
    const renamed = templateName(PREFIX, 'tiny', gen);
    await virsh.run(['domrename', name, renamed]);
    expect(readMeta(parseDomainXml(await virsh.run(['dumpxml', renamed])))).toEqual({ ok: true, meta });
    await virsh.run(['undefine', renamed]);
  });

  it('observes many guests with at most two virsh processes, leaving foreign and unparsable ones alone', async () => {
    const gen = makeGen(new Date(), tiny.inputsHash);
    const N = 20;
    await virsh.define(await xmlFor(templateName(PREFIX, 'tiny', gen), gen));
    for (let i = 0; i < N; i++) await virsh.define(await xmlFor(runnerName(PREFIX, 'tiny', i), gen));
    await virsh.define(plainXml('someone-elses-vm'));
    await virsh.define(plainXml('ci-not-a-corral-name'));
    await virsh.define(plainXml('ci-runner-tiny.99'));

    spawned.length = 0;
    const obs = await hv.observe();
    const virshCount = spawned.filter((f) => f === 'virsh').length;
    console.info(`observe of ${N + 4} guests: ${virshCount} virsh processes, ${spawned.length} processes in all`);
    expect(virshCount).toBeLessThanOrEqual(2);
    expect(spawned).toHaveLength(virshCount);
    expect(obs.guests).toHaveLength(N + 1);
    expect(obs.guests.every((g) => g.meta.gen === gen && g.meta.owner === 'lock-1' && g.state === 'shutoff')).toBe(
      true,
    );
    expect(
      obs.guests
        .filter((g) => g.role === 'runner')
        .map((g) => g.index)
        .sort((a, b) => a! - b!),
    ).toEqual([...Array(N).keys()]);
    expect([...obs.unrecognized].sort((a, b) => a.name.localeCompare(b.name))).toEqual([
      { name: 'ci-not-a-corral-name', reason: expect.stringContaining('naming scheme') },
      { name: 'ci-runner-tiny.99', reason: 'no corral metadata' },
    ]);
    expect(obs.guests.some((g) => g.name === 'someone-elses-vm')).toBe(false);

    // Metadata is memoized by UUID: the next pass asks again only about the guest that had none.
    spawned.length = 0;
    inputs.length = 0;
    expect((await hv.observe()).guests).toHaveLength(N + 1);
    expect(spawned).toEqual(['virsh', 'virsh']);
    expect(inputs[1]?.match(/^metadata .*$/gm)).toEqual([expect.stringContaining("'ci-runner-tiny.99'")]);

    for (const g of obs.guests) await hv.destroy(g.name);
    await expect(hv.destroy('someone-elses-vm')).rejects.toThrow(/refusing/);
    const left = (await virsh.run(['list', '--all', '--name'])).split('\n').filter(Boolean).sort();
    expect(left).toEqual(['ci-not-a-corral-name', 'ci-runner-tiny.99', 'someone-elses-vm']);
  });

  it('never deletes a template disk that another guest still backs on', async () => {
    const gen = makeGen(new Date(), tiny.inputsHash);
    const template = templateName(PREFIX, 'tiny', gen);
    const runner = runnerName(PREFIX, 'tiny', 5);
    const base = await cachedBase(tiny, imagesDir);
    const disk = path.join(imagesDir, 'templates', `tiny@${gen}.qcow2`);
    const runnerDisk = path.join(imagesDir, 'runners', `${runner}.qcow2`);
    for (const f of [disk, runnerDisk]) await mkdir(path.dirname(f), { recursive: true });
    await execaExec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, disk]);
    await execaExec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', disk, runnerDisk]);
    await virsh.define(await xmlFor(template, gen, { disk }));
    await virsh.define(await xmlFor(runner, gen, { disk: runnerDisk }));

    // A clone under a name that exists fails without touching that guest's disk.
    const before = await stat(runnerDisk);
    await expect(hv.createRunner({ template, name: runner, profile: tiny, meta: metaFor(tiny, gen) })).rejects.toThrow(
      /already exists/,
    );
    expect((await stat(runnerDisk)).mtimeMs).toBe(before.mtimeMs);
    expect(await filesUnder(path.join(imagesDir, 'runners'))).toEqual([path.basename(runnerDisk)]);

    await hv.destroy(template);
    expect(await filesUnder(path.join(imagesDir, 'templates'))).toEqual([path.basename(disk)]);
    await hv.destroy(runner);
    expect(await filesUnder(path.join(imagesDir, 'runners'))).toEqual([]);
    expect((await filesUnder(path.join(imagesDir, 'base'))).filter((f) => f.endsWith('.qcow2'))).toHaveLength(1);
    await rm(disk); // orphaned by design: gc's job, not destroy's
  });

  it('a build that cannot start fails with a CommandError and leaves no files behind', async () => {
    const broken = { ...tiny, provision: { ...tiny.provision, dir: path.join(workDir, 'no-such-provision-dir') } };
    const gen = makeGen(new Date(), tiny.inputsHash);
    const name = rebuildName(PREFIX, 'tiny', gen);
    await expect(
      hv.startBuild({ name, profile: broken, meta: metaFor(tiny, gen), baseImage: await cachedBase(tiny, imagesDir) }),
    ).rejects.toBeInstanceOf(CommandError);
    expect((await filesUnder(imagesDir)).filter((f) => !f.startsWith('base/'))).toEqual([]);
    expect((await hv.observe()).guests.map((g) => g.name)).not.toContain(name);
  });
});
