import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const BIN = join(import.meta.dirname, '../../bin/corral.js');

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'corral-cli-'));
  await writeFile(
    join(root, 'corral.yaml'),
    `builtinProfiles: false\nhypervisor: memory\nstateDir: state\nsources:\n  - { name: local, path: profiles }\n`,
  );
  await writeProfile('web', 2, 'echo v1');
});
afterEach(async () => rm(root, { recursive: true, force: true }));

async function writeProfile(name: string, runners: number, script: string): Promise<void> {
  const dir = join(root, 'profiles', name);
  await mkdir(join(dir, 'provision'), { recursive: true });
  await writeFile(join(dir, 'base.img'), 'base image bytes');
  await writeFile(join(dir, 'provision', 'provision.sh'), `#!/bin/sh\n${script}\n`);
  await writeFile(
    join(dir, 'profile.yaml'),
    `runners: ${runners}\nbase: { file: base.img }\nprovision: { timeout: 60 }\n`,
  );
}

function corral(args: string[], env: Record<string, string> = {}) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn', ...env },
  });
}

async function planJson() {
  const result = await corral(['plan', '--json']);
  expect(result.exitCode).toBe(0);
  return JSON.parse(result.stdout) as {
    format_version: number;
    generation: number | null;
    actions: { action: string; guest: string; profile: string; reason: string }[];
    waits: unknown[];
  };
}

async function guests(): Promise<{ name: string; state: string; meta?: { gen: string } }[]> {
  return (
    JSON.parse(await readFile(join(root, 'state', 'memory-hypervisor.json'), 'utf8')) as {
      guests: { name: string; state: string; meta?: { gen: string } }[];
    }
  ).guests;
}

describe('corral CLI on the memory backend', () => {
  it('plans, reconciles, and then is in sync (exit codes 2 → 0)', async () => {
    expect((await corral(['plan', '--detailed-exitcode'])).exitCode).toBe(2);
    const before = await planJson();
    expect(before).toMatchObject({
      format_version: 1,
      generation: null,
      actions: [{ action: 'build', profile: 'web', reason: 'no template yet' }],
    });
    const reconcile = await corral(['reconcile', '--once']);
    expect(reconcile.exitCode, reconcile.stderr).toBe(0);
    expect(reconcile.stdout).toMatch(/ok +build ci-rebuild-web@/);
    const names = (await guests()).map((g) => g.name).sort();
    expect(names).toEqual([
      expect.stringMatching(/^ci-runner-web\.1$/),
      'ci-runner-web.2',
      expect.stringMatching(/^ci-template-web@\d{8}T\d{6}Z-[0-9a-f]{8}$/),
    ]);
    expect((await corral(['plan', '--detailed-exitcode'])).exitCode).toBe(0);
    expect((await planJson()).generation).toBe(1);
  });

  it('exits 1 with the problems when the sources are invalid', async () => {
    await writeFile(join(root, 'profiles', 'web', 'profile.yaml'), 'runners: two\nbase: { file: base.img }\n');
    const result = await corral(['plan', '--detailed-exitcode']);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain(`${join(root, 'profiles', 'web', 'profile.yaml')}#/runners: must be integer`);
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('a runner-count change plans only runner changes', async () => {
    await corral(['reconcile', '--once']);
    await writeProfile('web', 3, 'echo v1');
    expect((await planJson()).actions.map((a) => a.action)).toEqual(['create-runner']);
    await writeProfile('web', 1, 'echo v1');
    expect((await planJson()).actions.map((a) => a.action)).toEqual(['destroy-runner']);
  });

  it('a provision change rebuilds, then replaces runners rollingly and retires nothing it still needs', async () => {
    await corral(['reconcile', '--once']);
    const oldTemplate = (await guests()).find((g) => g.name.startsWith('ci-template-'))!;
    await writeProfile('web', 2, 'echo v2');
    expect((await planJson()).actions.map((a) => a.action)).toEqual(['build']);
    const result = await corral(['reconcile', '--once']);
    expect(result.exitCode, result.stderr).toBe(0);
    // New runners first, old ones destroyed once the new ones are ready (memory guests are at once).
    expect(result.stdout.match(/ok +create-runner/g)).toHaveLength(2);
    expect(result.stdout.match(/ok +destroy-runner/g)).toHaveLength(2);
    const after = await guests();
    const templates = after.filter((g) => g.name.startsWith('ci-template-')).map((g) => g.name);
    expect(templates).toHaveLength(2); // keepTemplates: 2 keeps the previous one for rollback
    const newGen = templates.find((t) => t !== oldTemplate.name)!.split('@')[1];
    expect(after.filter((g) => g.name.startsWith('ci-runner-')).map((g) => g.meta?.gen)).toEqual([newGen, newGen]);
    const events = (await readFile(join(root, 'state', 'events.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { action: string });
    expect(events.map((e) => e.action)).toContain('destroy-runner');
  });

  it('a failed build leaves the live template and its runners untouched and backs off', async () => {
    await corral(['reconcile', '--once']);
    const before = await guests();
    await writeProfile('web', 2, 'exit 1');
    const result = await corral(['reconcile', '--once'], { CORRAL_MEMORY_OUTCOMES: 'web=fail' });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/FAILED build ci-rebuild-web@\S+: provision script exited with status 1/);
    const kept = /console log: (\S+console\.log)\)/.exec(result.stdout)?.[1];
    const rebuild = /FAILED build (\S+):/.exec(result.stdout)?.[1] ?? '';
    expect(kept).toBe(join(root, 'state', 'templates', rebuild.replace('-rebuild-', '-template-'), 'console.log'));
    expect(await readFile(kept!, 'utf8')).toContain('failed: provision script exited with status 1');
    expect(result.stdout).toMatch(/waiting web: inputs changed .* backing off after 1 failed build\(s\) until/);
    expect(await guests()).toEqual(before);
    const status = JSON.parse((await corral(['status', '--json'])).stdout) as {
      profiles: {
        template: { current: boolean };
        runners: { running: number };
        lastBuild: { ok: boolean };
        pending: { kind: string; reason: string; until?: string }[];
      }[];
    };
    expect(status.profiles[0]).toMatchObject({
      template: { current: false },
      runners: { running: 2 },
      lastBuild: { ok: false },
    });
    expect(status.profiles[0]?.pending[0]).toMatchObject({
      kind: 'build-backoff',
      reason: expect.stringMatching(/backing off/),
    });
    // Both say when corral looks again by itself: at the back-off expiry.
    const until = status.profiles[0]?.pending[0]?.until;
    const hms = new Date(until!).toISOString().slice(11, 19);
    expect((await corral(['status'])).stdout).toMatch(
      new RegExp(`next look by itself: retry at ${hms}, in \\d+ s \\(web: build-backoff\\)`),
    );
    expect((await corral(['plan'])).stdout).toMatch(
      new RegExp(`@ retry at ${hms}, in \\d+ s \\(web: build-backoff\\)`),
    );
    // The back-off is persisted: a cron run right after does not build again.
    const again = await corral(['reconcile', '--once'], { CORRAL_MEMORY_OUTCOMES: 'web=fail' });
    expect(again.stdout).not.toMatch(/^(ok|FAILED) +build/m);
    expect(again.stdout).toMatch(/0 action\(s\)/);
  });

  it('refuses a second writer with exit 75 and names the holder', async () => {
    await mkdir(join(root, 'state'), { recursive: true });
    await writeFile(
      join(root, 'state', 'lock'),
      JSON.stringify({
        pid: process.pid,
        command: 'watch',
        token: 't',
        host: (await import('node:os')).hostname(),
        startedAt: 'now',
      }),
    );
    const result = await corral(['reconcile', '--once']);
    expect(result.exitCode).toBe(75);
    expect(result.stderr).toMatch(new RegExp(`locked by pid ${process.pid} \\(corral watch`));
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it(
    'a second SIGTERM exits at once while the first waits for a pass stuck on a silent registry',
    { timeout: 60_000 },
    async () => {
      // A registry that accepts connections and never answers: the pass hangs on resolving the tag.
      const held: net.Socket[] = [];
      const silent = net.createServer((socket) => held.push(socket));
      await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
      const port = (silent.address() as net.AddressInfo).port;
      const dir = join(root, 'profiles', 'follower');
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'profile.yaml'), `runners: 1\ntemplate: { oci: "127.0.0.1:${port}/ci/tiny:latest" }\n`);
      try {
        const run = corral(['reconcile', '--once']);
        for (let i = 0; held.length === 0 && i < 400; i++) await sleep(50);
        expect(held.length, 'the pass to reach the registry').toBeGreaterThan(0);
        run.kill('SIGTERM');
        await sleep(1500);
        expect(run.exitCode, 'the first SIGTERM waits for the pass').toBeNull();
        run.kill('SIGTERM');
        const result = await Promise.race([run, sleep(10_000).then(() => undefined)]);
        expect(result?.exitCode).toBe(143);
        expect(result?.stderr).toMatch(/SIGTERM again: exiting now/);
      } finally {
        for (const socket of held) socket.destroy();
        silent.close();
      }
    },
  );

  it('reconcile without --once explains itself', async () => {
    const result = await corral(['reconcile']);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/needs --once/);
  });
});
