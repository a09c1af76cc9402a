/**
 * Base versions and provenance through the real `corral` binary on the memory backend, against a
 * local HTTP server playing the upstream image host (its SHA256SUMS re-read every pass). The real
 * libvirt path of the same story is test/e2e/base-images.e2e.test.ts; this one covers the
 * branches cheaply: server down, the disk floor, a failed build kept aside, history and gc.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesUnder } from '../harness/guests.js';
import { ImageServer } from '../harness/image-server.js';

const BIN = join(import.meta.dirname, '../../bin/corral.js');
const server = new ImageServer();
let root: string;
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const image = (fill: string) => Buffer.alloc(1024 * 1024, fill);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'corral-bases-'));
  await server.start();
  server.publish('cloud.img', image('1'));
  await writeConfig();
  const dir = join(root, 'profiles', 'web');
  await mkdir(join(dir, 'provision'), { recursive: true });
  await writeFile(join(dir, 'provision', 'provision.sh'), '#!/bin/sh\necho v1\n', { mode: 0o755 });
  await writeFile(
    join(dir, 'profile.yaml'),
    `runners: 2\nbase: { url: "${server.url}/cloud.img", checksums: "${server.url}/SHA256SUMS" }\nguest: { disk: 8G }\n`,
  );
});
afterAll(async () => {
  await server.stop();
  await rm(root, { recursive: true, force: true });
});

async function writeConfig(minFreeSpace = '0'): Promise<void> {
  await writeFile(
    join(root, 'corral.yaml'),
    `builtinProfiles: false\nhypervisor: memory\nstateDir: state\nimagesDir: images\nkeepTemplates: 1\nminFreeSpace: ${minFreeSpace}\ngc: { keepBaseVersions: 1 }\nrebuild: { backoffInitial: 1s, backoffMax: 1s }\nsources: [{ name: local, path: profiles }]\n`,
  );
}

function corral(args: string[], env: Record<string, string> = {}) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn', ...env },
  });
}

async function guestNames(): Promise<string[]> {
  const state = JSON.parse(await readFile(join(root, 'state', 'memory-hypervisor.json'), 'utf8')) as {
    guests: { name: string }[];
  };
  return state.guests.map((g) => g.name).sort();
}

const cachedBases = async () => (await filesUnder(join(root, 'images', 'base'))).filter((f) => f.endsWith('.qcow2'));

interface StatusJson {
  disk: { belowFloor: boolean; minFreeBytes: number };
  profiles: {
    name: string;
    pending: { reason: string; kind: string; until?: string }[];
    lastBuild: { ok: boolean; error?: string } | null;
  }[];
}

describe('base images from a checksum list, on the memory backend', () => {
  it('builds from the listed version, downloading it once, and inspect reaches every input file', async () => {
    const first = await corral(['reconcile', '--once']);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/ok +build ci-rebuild-web@/);
    const v1 = sha(image('1'));
    expect(await cachedBases()).toEqual([`sha256/${v1}.qcow2`]);
    expect((await corral(['reconcile', '--once'])).exitCode).toBe(0);
    expect(server.downloads('/cloud.img')).toHaveLength(1);
    expect((await corral(['plan', '--detailed-exitcode'])).exitCode).toBe(0);

    const inspect = await corral(['inspect', 'ci-runner-web.1', '--json']);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    const r = JSON.parse(inspect.stdout) as {
      runner: { name: string };
      template: { name: string; exists: boolean };
      manifestDigest: { verified: boolean };
      manifest: {
        profile: { name: string; source: string; generation: number };
        inputs: { path: string; sha256: string; mode: string }[];
        base: { kind: string; url: string; checksums: string; version: string; digest: string };
        guest: { diskBytes: number };
        result: { verdict: string };
      };
    };
    expect(r.runner.name).toBe('ci-runner-web.1');
    expect(r.template).toMatchObject({ name: expect.stringMatching(/^ci-template-web@/), exists: true });
    expect(r.manifestDigest.verified).toBe(true);
    const script = await readFile(join(root, 'profiles', 'web', 'provision', 'provision.sh'));
    expect(r.manifest.inputs).toEqual([
      { path: 'provision/provision.sh', sha256: sha(script), executable: true, mode: '0755' },
    ]);
    expect(r.manifest.base).toMatchObject({
      kind: 'checksums',
      url: `${server.url}/cloud.img`,
      checksums: `${server.url}/SHA256SUMS`,
      version: `sha256:${v1}`,
      digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
    });
    expect(r.manifest.guest.diskBytes).toBe(8 * 2 ** 30);
    expect(r.manifest.profile).toMatchObject({ name: 'web', source: 'local', generation: 1 });
    const text = await corral(['inspect', 'web']);
    expect(text.stdout).toMatch(/manifest sha256:[0-9a-f]{12}… matches the guest's metadata/);
    expect(text.stdout).toContain(`0755 ${sha(script)}  provision/provision.sh`);
  });

  it('with the server down: live template and runners untouched, status says why', async () => {
    const before = await guestNames();
    await server.stop();
    try {
      const result = await corral(['reconcile', '--once']);
      expect(result.exitCode, result.stderr).toBe(0);
      expect(await guestNames()).toEqual(before);
      const status = JSON.parse((await corral(['status', '--json'])).stdout) as StatusJson;
      expect(status.profiles[0]?.pending.map((w) => w.kind)).toEqual(['base-unresolved']);
      expect(status.profiles[0]?.pending[0]?.until).toMatch(/^\d{4}-/); // the resolver's back-off: when to look again
      expect(status.profiles[0]?.pending.map((w) => w.reason).join('\n')).toMatch(
        /base not resolved: cannot read http:\/\/127\.0\.0\.1:\d+\/SHA256SUMS: fetch failed .*; keeping base sha256:[0-9a-f]{12}… resolved .*; live template and runners kept/,
      );
    } finally {
      await server.start();
    }
  });

  it('a new version in the list rebuilds, rolls the runners, and collects the old base once unused', async () => {
    const v2 = server.publish('cloud.img', image('2'));
    const plan = await corral(['plan']);
    expect(plan.stdout).toMatch(/\+ ci-rebuild-web@\S+ +build: inputs changed/);
    const result = await corral(['reconcile', '--once']);
    expect(result.exitCode, result.stderr).toBe(0);
    // Rollover in two steps: replacements on the new template first, then the old runners go.
    expect(result.stdout.match(/ok +create-runner/g)).toHaveLength(2);
    expect(result.stdout.match(/ok +destroy-runner/g)).toHaveLength(2);
    expect(result.stdout).toMatch(/ok +retire-template/);
    expect(await cachedBases()).toEqual([`sha256/${v2}.qcow2`]);
    expect(server.downloads('/cloud.img')).toHaveLength(2); // one per version
  });

  it('a failed build kept aside by --keep-failed: history shows it beside the successes, logs show its console, gc removes it', async () => {
    await writeFile(join(root, 'profiles', 'web', 'provision', 'provision.sh'), '#!/bin/sh\nexit 1\n');
    const result = await corral(['reconcile', '--once', '--keep-failed'], { CORRAL_MEMORY_OUTCOMES: 'web=fail' });
    expect(result.exitCode, result.stderr).toBe(0);
    const failed = /kept as (ci-failed-web@\S+)\)/.exec(result.stdout)?.[1];
    expect(failed, result.stdout).toBeDefined();
    expect(await guestNames()).toContain(failed);

    const history = JSON.parse((await corral(['history', 'web', '--json'])).stdout) as {
      builds: { verdict: string; live: boolean; failure: string | null; baseVersion: string; keptAs?: string }[];
    };
    expect(history.builds.map((b) => b.verdict)).toEqual(['ok', 'ok', 'failed']);
    expect(history.builds[1]?.live).toBe(true);
    expect(history.builds[2]).toMatchObject({ failure: 'provision script exited with status 1', keptAs: failed });
    const text = await corral(['history', 'web']);
    expect(text.stdout).toMatch(/FAILED .*\n +why: inputs changed.*\n +result: provision script exited with status 1/);

    const logs = await corral(['logs', failed!]);
    expect(logs.exitCode, logs.stderr).toBe(0);
    expect(logs.stdout).toContain('failed: provision script exited with status 1');
    // -f on a guest that is not running prints what there is and ends.
    const followed = await corral(['logs', '-f', failed!]);
    expect(followed.exitCode, followed.stderr).toBe(0);
    expect(followed.stdout).toBe(logs.stdout);
    const unknown = await corral(['logs', 'ci-runner-web.9']);
    expect(unknown.exitCode).toBe(1);
    expect(unknown.stderr).toContain('no console log for ci-runner-web.9');

    const dry = await corral(['gc', '--dry-run']);
    expect(dry.stdout).toContain(`would remove guest ${failed} (failed build kept by --keep-failed)`);
    expect(await guestNames()).toContain(failed);
    const gc = JSON.parse((await corral(['gc', '--json'])).stdout) as { guests: { name: string }[] };
    expect(gc.guests.map((g) => g.name)).toEqual([failed]);
    expect(await guestNames()).not.toContain(failed);
    // The record outlives the guest: logs still answer from it.
    expect((await corral(['logs', failed!])).stdout).toContain('failed: provision script exited with status 1');
  });

  it('below the free-space floor a build is refused, and status says so', async () => {
    await new Promise((r) => setTimeout(r, 1100)); // the 1s back-off of the failure above
    await writeConfig('1000T');
    await writeFile(join(root, 'profiles', 'web', 'provision', 'provision.sh'), '#!/bin/sh\necho v3\n');
    const before = await guestNames();
    const result = await corral(['reconcile', '--once']);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      /FAILED build ci-rebuild-web@\S+: base not ready: imagesDir \S+ has [\d.]+ \w+ free, below minFreeSpace 1000 TiB even after collecting garbage; refusing to build/,
    );
    expect(await guestNames()).toEqual(before);
    const status = JSON.parse((await corral(['status', '--json'])).stdout) as StatusJson;
    expect(status.profiles[0]?.lastBuild?.error).toMatch(/below minFreeSpace 1000 TiB/);
    const text = (await corral(['status'])).stdout;
    expect(text).toMatch(/last build: FAILED: .*below minFreeSpace 1000 TiB/);
    expect(text).toMatch(
      /imagesDir \S+: [\d.]+ \w+ free, below minFreeSpace 1000 TiB: garbage is collected first, then builds and downloads are refused/,
    );
    expect(status.disk).toMatchObject({ belowFloor: true, minFreeBytes: 1000 * 2 ** 40 });
    await writeConfig();
  });
});
