/**
 * Upstream-aware bases and provenance on a real, isolated libvirtd with real TCG guests: a local
 * HTTP server serves the tiny base image and a SHA256SUMS list. Kept lean (two builds, one runner):
 * the branches (floor, keep-failed, a failing build's history) are covered on the memory backend
 * in test/cli/base-images.test.ts and by the lifecycle e2e's failing build.
 */
import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHostConfig } from '../harness/host-config.js';
import { startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { ImageServer } from '../harness/image-server.js';
import { ensureTinyBuilt, TINY_DIR } from '../harness/tiny-profile.js';

const BIN = join(import.meta.dirname, '../../bin/corral.js');
const server = new ImageServer();
let libvirtd: Libvirtd;
let root: string;
const profileDir = () => join(root, 'profiles', 'tiny');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  await ensureTinyBuilt();
  libvirtd = await startLibvirtd();
  await server.start();
  root = await mkdtemp(join(tmpdir(), 'corral-e2e-bases-'));
  await mkdir(join(profileDir(), 'provision'), { recursive: true });
  for (const f of ['vmlinuz', 'initrd.img']) await cp(join(TINY_DIR, 'build', f), join(profileDir(), f));
  await cp(join(TINY_DIR, 'provision'), join(profileDir(), 'provision'), { recursive: true });
  server.publish('tiny.qcow2', await readFile(join(TINY_DIR, 'build', 'base.qcow2')));
  await writeFile(
    join(profileDir(), 'profile.yaml'),
    `runners: 1
base: { url: "${server.url}/tiny.qcow2", checksums: "${server.url}/SHA256SUMS" }
guest: { cpus: 1, memory: 128, kernel: vmlinuz, initrd: initrd.img, cmdline: "console=ttyS0 quiet", disk: 32M }
provision: { dir: provision, entry: provision.sh, timeout: 90 }
`,
  );
  await writeHostConfig(root, libvirtd.uri, [
    'keepTemplates: 1',
    'minFreeSpace: 0',
    'gc: { keepBaseVersions: 1 }',
    'concurrency: { builds: 1, clones: 2 }',
  ]);
}, 300_000);

afterAll(async () => {
  await server.stop();
  await libvirtd?.stop();
  await rm(root, { recursive: true, force: true });
});

function corral(args: string[]) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn' },
  });
}

async function virsh(...args: string[]): Promise<string> {
  return (await execa('virsh', ['-c', libvirtd.uri, ...args])).stdout;
}

async function guests(): Promise<string[]> {
  return (await virsh('list', '--all', '--name'))
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean)
    .sort();
}

async function bakedOn(runner: string): Promise<string> {
  const log = join(root, 'images', 'logs', `${runner}.console.log`);
  for (let i = 0; i < 120; i++) {
    const match = /corral-runner: (.*)/.exec(existsSync(log) ? await readFile(log, 'utf8') : '');
    if (match?.[1]) return match[1].trim();
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${runner} never printed what its template baked`);
}

interface Inspected {
  template: { name: string };
  manifestDigest: { verified: boolean };
  manifest: {
    inputs: { path: string; sha256: string; mode: string }[];
    base: { version: string };
    result: { verdict: string; backingChain: string[]; consoleLog: string };
  };
}

let v1 = '';
let oldTemplate = '';
let oldChain: string[] = [];

describe('bases from an upstream checksum list, on a real libvirtd', { timeout: 300_000 }, () => {
  it('builds from the listed version and a runner traces back to every provision file', async () => {
    const result = await corral(['reconcile', '--once']);
    expect(result.exitCode, result.stdout + result.stderr).toBe(0);
    expect(await bakedOn('ci-runner-tiny.1')).toBe('tiny hello v1 (from tiny 1)');
    v1 = sha(await readFile(join(TINY_DIR, 'build', 'base.qcow2')));

    const inspect = JSON.parse((await corral(['inspect', 'ci-runner-tiny.1', '--json'])).stdout) as Inspected;
    expect(inspect.manifestDigest.verified).toBe(true);
    const expected = await Promise.all(
      ['message', 'provision.sh'].map(async (f) => ({
        path: `provision/${f}`,
        sha256: sha(await readFile(join(profileDir(), 'provision', f))),
      })),
    );
    expect(inspect.manifest.inputs.filter((i) => i.path.startsWith('provision/'))).toEqual(
      expected.map((e) => expect.objectContaining(e)),
    );
    expect(inspect.manifest.base.version).toBe(`sha256:${v1}`);
    oldTemplate = inspect.template.name;
    oldChain = inspect.manifest.result.backingChain;
    expect(oldChain).toEqual([
      join(root, 'images', 'templates', `${oldTemplate.replace('ci-template-', '')}.qcow2`),
      join(root, 'images', 'base', 'sha256', `${v1}.qcow2`),
    ]);
    // guest.disk: 32M grew the overlay beyond the 16 MiB base.
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', oldChain[0]!])).stdout) as {
      'virtual-size': number;
    };
    expect(info['virtual-size']).toBe(32 * 2 ** 20);

    const logs = await corral(['logs', oldTemplate]);
    expect(logs.stdout).toContain('corral-build: running provision.sh');
    const history = JSON.parse((await corral(['history', 'tiny', '--json'])).stdout) as {
      builds: { verdict: string }[];
    };
    expect(history.builds.map((b) => b.verdict)).toEqual(['ok']);
  });

  it('with the server down, the live template and runner stay and status says why', async () => {
    const before = await guests();
    await server.stop();
    try {
      const result = await corral(['reconcile', '--once']);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(await guests()).toEqual(before);
      expect((await corral(['status'])).stdout).toMatch(
        /pending: base not resolved: cannot read http:\/\/127\.0\.0\.1:\d+\/SHA256SUMS/,
      );
    } finally {
      await server.start();
    }
  });

  it('a new upstream version rebuilds and rolls the runner; gc keeps what a guest still backs, then collects it', async () => {
    // A guest corral does not own whose disk overlays the old template's: it pins the whole chain.
    const keeperDisk = join(root, 'keeper.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', oldChain[0]!, keeperDisk]);
    const xml = `<domain type='qemu'><name>keeper</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${keeperDisk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>`;
    await writeFile(join(root, 'keeper.xml'), xml);
    await virsh('define', join(root, 'keeper.xml'));

    // The new version is published raw: the cache converts it to qcow2.
    const raw = join(root, 'tiny.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', join(TINY_DIR, 'build', 'base.qcow2'), raw]);
    const v2 = server.publish('tiny.qcow2', await readFile(raw));
    const result = await corral(['reconcile', '--once']);
    expect(result.exitCode, result.stdout + result.stderr).toBe(0);
    // Rolled in two steps: the replacement first, the old runner once the new one is ready.
    expect(result.stdout).toMatch(/ok +create-runner ci-runner-tiny\.2[^]*ok +destroy-runner ci-runner-tiny\.1/);
    expect(result.stdout).toMatch(new RegExp(`ok +retire-template ${oldTemplate.replace(/[@.]/g, '\\$&')}`));
    expect(await bakedOn('ci-runner-tiny.2')).toBe('tiny hello v1 (from tiny 1)');
    expect(server.downloads('/tiny.qcow2')).toHaveLength(2); // each version once
    expect(existsSync(join(root, 'images', 'base', 'sha256', `${v2}.qcow2`))).toBe(true);
    // Retired, but its disk and base still back keeper's disk: neither the pass nor gc removes them.
    expect(await guests()).not.toContain(oldTemplate);
    expect((await corral(['gc'])).exitCode).toBe(0);
    for (const f of oldChain) expect(existsSync(f), f).toBe(true);

    await virsh('undefine', 'keeper');
    const gc = JSON.parse((await corral(['gc', '--json'])).stdout) as { files: { path: string }[] };
    expect(gc.files.map((f) => f.path)).toEqual(expect.arrayContaining(oldChain));
    for (const f of oldChain) expect(existsSync(f), f).toBe(false);
    expect((await corral(['plan', '--detailed-exitcode'])).exitCode).toBe(0);
  });
});
