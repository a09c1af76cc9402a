/**
 * Build once, run elsewhere: host A (its own state dir and libvirtd) builds the tiny template and
 * pushes it to a real registry; host B (a clean state dir, another libvirtd) pulls it and boots a
 * runner from it. Through the real `corral` binary, against Debian's docker-registry.
 */
import { cp, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLibvirtHypervisor } from '../../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { writeHostConfig } from '../harness/host-config.js';
import { startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { ensureTinyBuilt, TINY_DIR } from '../harness/tiny-profile.js';
import { startRegistry, type Registry } from '../harness/registry.js';
import { BIN } from '../builders/profile-dir.js';

interface Host {
  root: string;
  libvirtd: Libvirtd;
}
let a: Host;
let b: Host;
let registry: Registry;
let ref: string;

async function makeHost(withProfile: boolean): Promise<Host> {
  const libvirtd = await startLibvirtd();
  const root = await mkdtemp(join(tmpdir(), 'corral-oci-e2e-'));
  await mkdir(join(root, 'profiles'), { recursive: true });
  if (withProfile) {
    const dir = join(root, 'profiles', 'tiny');
    await mkdir(dir, { recursive: true });
    await cp(join(TINY_DIR, 'build'), join(dir, 'build'), { recursive: true });
    await cp(join(TINY_DIR, 'provision'), join(dir, 'provision'), { recursive: true });
    await writeFile(
      join(dir, 'profile.yaml'),
      `runners: 0
base: { file: build/base.qcow2 }
guest: { cpus: 1, memory: 128, kernel: build/vmlinuz, initrd: build/initrd.img, cmdline: "console=ttyS0 quiet" }
provision: { dir: provision, entry: provision.sh, timeout: 90 }
publish: { oci: "${registry.host}/corral/follow:latest" }
`,
    );
  }
  await writeHostConfig(root, libvirtd.uri, ['keepTemplates: 1']);
  return { root, libvirtd };
}

function corral(host: Host, args: string[]) {
  return execa('node', [BIN, ...args, '--config', join(host.root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn', DOCKER_CONFIG: join(host.root, 'docker') },
  });
}

async function virsh(host: Host, ...args: string[]): Promise<string> {
  return (await execa('virsh', ['-c', host.libvirtd.uri, ...args])).stdout;
}

async function runningRunners(host: Host): Promise<string[]> {
  return (await virsh(host, 'list', '--state-running', '--name'))
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith('ci-runner-'))
    .sort();
}

async function bakedOn(host: Host, runner: string): Promise<string> {
  const log = join(host.root, 'images/logs', `${runner}.console.log`);
  for (let i = 0; i < 240; i++) {
    const match = /corral-runner: (.*)/.exec(existsSync(log) ? await readFile(log, 'utf8') : '');
    if (match?.[1]) return match[1].trim();
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`${runner} never printed what its template baked`);
}

/** Samples B's running runners while `work` runs; returns the smallest count seen. */
async function minRunningDuring(host: Host, work: Promise<unknown>): Promise<number> {
  let min = Infinity;
  let done = false;
  void work.finally(() => (done = true));
  while (!done) {
    min = Math.min(min, (await runningRunners(host)).length);
    await new Promise((r) => setTimeout(r, 150));
  }
  await work;
  return min;
}

async function templatesOn(host: Host): Promise<string[]> {
  return (await virsh(host, 'list', '--all', '--name'))
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith('ci-template-'))
    .sort();
}

beforeAll(async () => {
  await ensureTinyBuilt();
  registry = await startRegistry();
  [a, b] = await Promise.all([makeHost(true), makeHost(false)]);
  ref = `${registry.host}/corral/tiny:v1`;
}, 300_000);

afterAll(async () => {
  await Promise.all([a?.libvirtd.stop(), b?.libvirtd.stop()]);
  await registry?.stop();
  await Promise.all([a, b].map((h) => h && rm(h.root, { recursive: true, force: true })));
}, 300_000);

describe('push on one host, pull on another', { timeout: 300_000 }, () => {
  it('A builds and pushes; an unchanged second push uploads nothing', async () => {
    const built = await corral(a, ['reconcile', '--once']);
    expect(built.exitCode, built.stdout + built.stderr).toBe(0);
    expect(await templatesOn(a)).toHaveLength(1);
    const pushed = await corral(a, ['push', 'tiny', ref, '--json']);
    expect(pushed.exitCode, pushed.stderr).toBe(0);
    const first = JSON.parse(pushed.stdout) as { uploadedBlobs: number; reference: string; digest: string };
    expect(first.uploadedBlobs).toBeGreaterThan(1);
    const again = await corral(a, ['push', 'tiny', ref, '--json']);
    const second = JSON.parse(again.stdout) as { uploadedBlobs: number; uploadedBytes: number; digest: string };
    expect(second).toMatchObject({ uploadedBlobs: 0, uploadedBytes: 0, digest: first.digest });
  });

  it('B pulls into a clean state dir: same disk content, and a runner boots from it', async () => {
    const pulled = await corral(b, ['pull', ref]);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const [template] = await templatesOn(b);
    expect(template).toBe((await templatesOn(a))[0]);
    expect(pulled.stdout.trim()).toBe(template);
    const key = template!.replace('ci-template-', '');
    const diskA = join(a.root, 'images/templates', `${key}.qcow2`);
    const diskB = join(b.root, 'images/templates', `${key}.qcow2`);
    // Guest-visible bytes through the whole backing chain (the headers differ: each names its own base path).
    await execa('qemu-img', ['compare', '-q', diskA, diskB]);
    const [baseA] = (await readdir(join(a.root, 'images/base/sha256'))).filter((f) => f.endsWith('.qcow2'));
    expect((await readdir(join(b.root, 'images/base/sha256'))).filter((f) => f.endsWith('.qcow2'))).toEqual([baseA]);
    expect(
      (await readFile(join(b.root, 'images/base/sha256', baseA!))).equals(
        await readFile(join(a.root, 'images/base/sha256', baseA!)),
      ),
    ).toBe(true);
    // The base that came with the template has a descriptor like any base in the cache.
    const descriptor = (host: Host) =>
      readFile(join(host.root, 'images/base/sha256', baseA!.replace(/qcow2$/, 'json')), 'utf8').then(
        (t) => JSON.parse(t) as { version: string; digest: string; source: object; sourceFormat: string },
      );
    const digest = (JSON.parse((await corral(b, ['pull', ref, '--json'])).stdout) as { digest: string }).digest;
    expect(await descriptor(b)).toMatchObject({
      version: `sha256:${baseA!.replace(/\.qcow2$/, '')}`,
      source: { kind: 'oci', reference: `${registry.host}/corral/tiny@${digest}`, template },
      sourceFormat: 'qcow2',
      digest: (await descriptor(a)).digest,
    });
    expect(existsSync(join(b.root, 'images/staging'))).toBe(true);
    expect(await readdir(join(b.root, 'images/staging'))).toEqual([]);
    // A second pull finds it present and downloads nothing.
    const again = await corral(b, ['pull', ref, '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ present: true, template });

    const hv = createLibvirtHypervisor({
      uri: b.libvirtd.uri,
      prefix: 'ci',
      imagesDir: join(b.root, 'images'),
      log: pino({ level: 'silent' }),
    });
    const observed = await hv.observe();
    const t = observed.guests.find((g) => g.name === template)!;
    await hv.createRunner({
      template: template!,
      name: 'ci-runner-tiny.1',
      profile: { name: 'tiny', labels: {} } as never,
      meta: { ...t.meta, createdAt: new Date().toISOString() },
    });
    const log = join(b.root, 'images/logs/ci-runner-tiny.1.console.log');
    let baked = '';
    for (let i = 0; i < 240 && !baked; i++) {
      baked = /corral-runner: (.*)/.exec(existsSync(log) ? await readFile(log, 'utf8') : '')?.[1]?.trim() ?? '';
      if (!baked) await new Promise((r) => setTimeout(r, 500));
    }
    expect(baked).toBe('tiny hello v1 (from tiny 1)');
  });

  it('two hosts follow one tag: A publishes, B runs runners and rolls over with no gap', async () => {
    await mkdir(join(b.root, 'profiles', 'follow'), { recursive: true });
    await writeFile(
      join(b.root, 'profiles', 'follow', 'profile.yaml'),
      `runners: 2\ntemplate: { oci: "${registry.host}/corral/follow:latest" }\n`,
    );
    // A published when it promoted its template in the first test.
    const first = await corral(b, ['reconcile', '--once']);
    expect(first.exitCode, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^ok +pull ci-template-follow@\S+ /m);
    expect(await runningRunners(b)).toEqual(['ci-runner-follow.1', 'ci-runner-follow.2']);
    for (const r of await runningRunners(b)) expect(await bakedOn(b, r)).toBe('tiny hello v1 (from tiny 1)');
    const inSync = await corral(b, ['plan', '--detailed-exitcode']);
    expect(inSync.exitCode, inSync.stdout).toBe(0);

    await writeFile(join(a.root, 'profiles', 'tiny', 'provision', 'message'), 'hello v2\n');
    const rebuilt = await corral(a, ['reconcile', '--once']);
    expect(rebuilt.exitCode, rebuilt.stdout + rebuilt.stderr).toBe(0);
    const min = await minRunningDuring(b, corral(b, ['reconcile', '--once']));
    expect(min).toBeGreaterThan(0);
    const live = await runningRunners(b);
    expect(live).toHaveLength(2);
    for (const r of live) expect(await bakedOn(b, r)).toBe('tiny hello v2 (from tiny 1)');
    const status = await corral(b, ['status', '--json']);
    const follow = (
      JSON.parse(status.stdout) as { profiles: { name: string; template: { current: boolean } }[] }
    ).profiles.find((p) => p.name === 'follow');
    expect(follow?.template.current).toBe(true);
    // The base the pulls carried backs the followed templates: gc keeps it and its descriptor.
    const gc = JSON.parse((await corral(b, ['gc', '--dry-run', '--json'])).stdout) as { files: { path: string }[] };
    expect(gc.files.filter((f) => f.path.includes('/images/base/'))).toEqual([]);
  });

  it('a corrupted chunk fails verification and nothing lands', async () => {
    const manifest = JSON.parse(
      (await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`])).stdout,
    ) as { layers: { digest: string; annotations: Record<string, string> }[] };
    const victim = manifest.layers.find((l) => l.annotations['dev.corral.file'] === 'disk')!.digest.slice(7);
    const data = join(registry.storage, 'docker/registry/v2/blobs/sha256', victim.slice(0, 2), victim, 'data');
    const bytes = await readFile(data);
    bytes.writeUInt8(bytes.readUInt8(bytes.length >> 1) ^ 0xff, bytes.length >> 1);
    await writeFile(data, bytes);
    const before = await readdir(join(b.root, 'images/templates'));
    const result = await corral(b, ['pull', ref, '--as', 'other']);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/failed verification/);
    expect((await templatesOn(b)).filter((n) => n.includes('other'))).toEqual([]);
    expect(await readdir(join(b.root, 'images/templates'))).toEqual(before);
  });

  it('a registry outage is transient: runners stay and status says why', async () => {
    const before = await runningRunners(b);
    expect(before).toHaveLength(2);
    await registry.pause();
    const pass = await corral(b, ['reconcile', '--once']);
    expect(pass.exitCode, pass.stdout + pass.stderr).toBe(0);
    expect(await runningRunners(b)).toEqual(before);
    const status = await corral(b, ['status']);
    expect(status.stdout).toMatch(
      /pending: cannot resolve .*corral\/follow:latest: .*; runners stay on ci-template-follow@/,
    );
  });

  it('a publish that fails stays pending, backed off, and goes through once the registry is back', async () => {
    await writeFile(join(a.root, 'profiles', 'tiny', 'provision', 'message'), 'hello v3\n');
    const built = await corral(a, ['reconcile', '--once']);
    expect(built.exitCode, built.stdout + built.stderr).toBe(0);
    expect(built.stdout).toMatch(/^FAILED publish ci-template-tiny@\S+: publish of .* failed: .*; retrying at /m);
    const [template] = await templatesOn(a);
    const status = JSON.parse((await corral(a, ['status', '--json'])).stdout) as {
      profiles: { name: string; pending: { kind: string; reason: string; until: string }[] }[];
    };
    const pending = status.profiles.find((p) => p.name === 'tiny')!.pending;
    expect(pending).toEqual([
      {
        kind: 'publish-backoff',
        reason: expect.stringMatching(
          new RegExp(`^publish of ${template} to .*corral/follow:latest pending: 1 failed push\\(es\\), retrying at `),
        ),
        until: expect.any(String),
      },
    ]);
    expect((await corral(a, ['plan'])).stdout).toMatch(/= tiny: publish of .* pending: 1 failed push/);

    await registry.resume();
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(pending[0]!.until) - Date.now()) + 100));
    const retried = await corral(a, ['reconcile', '--once']);
    expect(retried.stdout).toMatch(new RegExp(`^ok +publish ${template} `, 'm'));
    const published = JSON.parse(await readFile(join(a.root, 'state', 'published.json'), 'utf8')) as Record<
      string,
      { template: string }
    >;
    expect(published['tiny']?.template).toBe(template);
    expect((await corral(a, ['plan', '--detailed-exitcode'])).exitCode).toBe(0);
  });
});
