/**
 * `base: {oci}` through the real `corral` binary on the memory backend, against Debian's
 * docker-registry behind a counting proxy: the tag is resolved with one HEAD per pass (never a
 * download), a new digest is pulled by the build into the base cache with the same descriptor any
 * base gets, the template rebuilds and runners roll; an outage keeps everything and says why.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stagingDir, type CachedBase } from '../../src/images/base-cache.js';
import { lockStaging } from '../../src/state/staging-lock.js';
import { BIN } from '../builders/profile-dir.js';
import { countingProxy, startRegistry, type CountingProxy, type Registry } from '../harness/registry.js';

let registry: Registry;
let proxy: CountingProxy;
let root: string;
let tag: string;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function corral(args: string[]) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn', DOCKER_CONFIG: join(root, 'docker') },
  });
}

async function guests(): Promise<{ name: string; meta?: { baseVersion: string } }[]> {
  const state = JSON.parse(await readFile(join(root, 'state', 'memory-hypervisor.json'), 'utf8')) as {
    guests: { name: string; meta?: { baseVersion: string } }[];
  };
  return state.guests.sort((a, b) => a.name.localeCompare(b.name));
}

const cache = () => join(root, 'images', 'base', 'sha256');
const cached = async () => (await readdir(cache()).catch(() => [] as string[])).sort();
const headsOfManifests = () => proxy.requests.filter((r) => r.method === 'HEAD' && r.path.includes('/manifests/'));

async function pushBase(file: string): Promise<string> {
  const pushed = await corral(['push', file, tag, '--json']);
  expect(pushed.exitCode, pushed.stderr).toBe(0);
  return (JSON.parse(pushed.stdout) as { digest: string }).digest;
}

beforeAll(async () => {
  registry = await startRegistry();
  proxy = await countingProxy(registry.host);
  tag = `${proxy.host}/bases/tiny:12`;
  root = await mkdtemp(join(tmpdir(), 'corral-base-oci-'));
  await writeFile(
    join(root, 'corral.yaml'),
    `builtinProfiles: false\nhypervisor: memory\nstateDir: state\nimagesDir: images\nkeepTemplates: 1\nminFreeSpace: 0\ngc: { keepBaseVersions: 1 }\nrebuild: { backoffInitial: 1s, backoffMax: 1s }\nsources: [{ name: local, path: profiles }]\n`,
  );
  const dir = join(root, 'profiles', 'web');
  await mkdir(join(dir, 'provision'), { recursive: true });
  await writeFile(join(dir, 'provision', 'provision.sh'), '#!/bin/sh\necho v1\n', { mode: 0o755 });
  await writeFile(join(dir, 'profile.yaml'), `runners: 2\nbase: { oci: "${tag}" }\n`);
}, 60_000);

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('base: {oci} on the memory backend', { timeout: 120_000 }, () => {
  let v1: string;

  it('pulls the pushed disk once into the base cache, with a descriptor, and builds on it', async () => {
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', join(root, 'base1.qcow2'), '64M']);
    v1 = await pushBase(join(root, 'base1.qcow2'));
    proxy.reset();
    const first = await corral(['reconcile', '--once']);
    expect(first.exitCode, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/ok +build ci-rebuild-web@/);
    const hex = v1.slice(7);
    expect(await cached()).toEqual([`${hex}.json`, `${hex}.qcow2`]);
    const bytes = await readFile(join(cache(), `${hex}.qcow2`));
    expect(bytes.equals(await readFile(join(root, 'base1.qcow2')))).toBe(true);
    const descriptor = JSON.parse(await readFile(join(cache(), `${hex}.json`), 'utf8')) as CachedBase;
    expect(descriptor).toMatchObject({
      version: v1,
      source: { kind: 'oci', reference: `${proxy.host}/bases/tiny@${v1}` },
      sourceFormat: 'qcow2',
      digest: `sha256:${sha(bytes)}`,
    });
    // The pull staged its files and left nothing behind.
    expect(await readdir(join(root, 'images', 'staging'))).toEqual([]);
    expect((await guests()).filter((g) => g.name.startsWith('ci-runner-web.'))).toHaveLength(2);
    expect((await guests()).every((g) => g.meta?.baseVersion === v1)).toBe(true);

    const inspect = await corral(['inspect', 'web', '--json']);
    expect(JSON.parse(inspect.stdout)).toMatchObject({
      manifest: {
        base: { kind: 'oci', reference: tag, version: v1, digest: `sha256:${sha(bytes)}` },
        result: { verdict: 'ok' },
      },
    });
  });

  it('resolves with one HEAD a pass and downloads nothing while the tag stays', async () => {
    proxy.reset();
    const again = await corral(['reconcile', '--once']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(headsOfManifests()).toHaveLength(1);
    expect(proxy.blobDownloads()).toEqual([]);
    expect(proxy.requests.filter((r) => r.method === 'GET' && r.path.includes('/manifests/'))).toEqual([]);
    expect((await corral(['plan', '--detailed-exitcode'])).exitCode).toBe(0);
  });

  it('a new digest is a new base version: pulled, converted from raw, rebuilt on, runners roll, the old base goes', async () => {
    await writeFile(join(root, 'base2.raw'), Buffer.alloc(4 * 1024 * 1024, 7));
    const v2 = await pushBase(join(root, 'base2.raw'));
    expect(v2).not.toBe(v1);
    const plan = await corral(['plan']);
    expect(plan.stdout).toMatch(/\+ ci-rebuild-web@\S+ {2}build: inputs changed/);
    const rolled = await corral(['reconcile', '--once']);
    expect(rolled.exitCode, rolled.stdout + rolled.stderr).toBe(0);
    const hex = v2.slice(7);
    expect(await cached()).toEqual([`${hex}.json`, `${hex}.qcow2`]);
    const descriptor = JSON.parse(await readFile(join(cache(), `${hex}.json`), 'utf8')) as CachedBase;
    expect(descriptor).toMatchObject({ version: v2, sourceFormat: 'converted', source: { kind: 'oci' } });
    const all = await guests();
    expect(all.filter((g) => g.name.startsWith('ci-runner-web.'))).toHaveLength(2);
    expect(all.every((g) => g.meta?.baseVersion === v2)).toBe(true);
    const history = await corral(['history', 'web', '--json']);
    expect(
      (JSON.parse(history.stdout) as { builds: { baseVersion: string; verdict: string }[] }).builds.map((b) => [
        b.baseVersion,
        b.verdict,
      ]),
    ).toEqual([
      [v1, 'ok'],
      [v2, 'ok'],
    ]);
  });

  it('a registry outage is transient: the live template and runners stay, status and plan say why', async () => {
    const before = await guests();
    await registry.pause();
    try {
      const pass = await corral(['reconcile', '--once']);
      expect(pass.exitCode, pass.stdout + pass.stderr).toBe(0);
      expect(await guests()).toEqual(before);
      const status = await corral(['status', '--json']);
      const web = (
        JSON.parse(status.stdout) as {
          profiles: { name: string; pending: { kind: string; reason: string; until?: string }[] }[];
        }
      ).profiles.find((p) => p.name === 'web');
      expect(web?.pending).toEqual([
        {
          kind: 'base-unresolved',
          reason: expect.stringMatching(
            /^base not resolved: cannot resolve .*\/bases\/tiny:12: .*; keeping base sha256:[0-9a-f]{12}… resolved .*; live template and runners kept$/,
          ),
          until: expect.any(String),
        },
      ]);
      expect((await corral(['plan'])).stdout).toMatch(/= web: base not resolved: cannot resolve/);
    } finally {
      await registry.resume();
    }
    const back = await corral(['reconcile', '--once']);
    expect(back.exitCode).toBe(0);
    expect(await guests()).toEqual(before);
  });

  it('status elsewhere sees a base being pulled for the next build (its staging lock) instead of a build to start', async () => {
    await writeFile(join(root, 'base3.raw'), Buffer.alloc(4 * 1024 * 1024, 9));
    const v3 = await pushBase(join(root, 'base3.raw'));
    const staging = stagingDir(join(root, 'images'), v3.slice(7));
    // As the watch holds it while its build fetches the base.
    const lock = await lockStaging(staging, `pull ${tag.replace(/:12$/, '')}@${v3}`);
    try {
      const status = JSON.parse((await corral(['status', '--json'])).stdout) as {
        profiles: { name: string; pending: { kind: string; reason: string }[]; changes: number }[];
      };
      const web = status.profiles.find((p) => p.name === 'web')!;
      expect(web.pending).toEqual([
        {
          kind: 'build-queued',
          reason: expect.stringMatching(
            new RegExp(
              `^inputs changed .*; base .*/bases/tiny:12 \\(sha256:[0-9a-f]{12}…\\) is being pulled for the build \\(pid ${process.pid}, corral pull `,
            ),
          ),
        },
      ]);
      expect(web.changes).toBe(0);
    } finally {
      await lock.release();
      await rm(staging, { recursive: true, force: true });
    }
  });
});
