/**
 * Drain on a real libvirtd: a rollover while one runner is busy with a (simulated) job. The busy
 * runner is not destroyed while it says busy, the others roll at once, and at every sampled moment
 * at least one runner is ready; past rollout.drainTimeout it is destroyed and the event says so.
 * (That an idle runner is then replaced is the planner's unit test: waiting out a job here costs.) The tiny guest plays the job: a file /jobs/<runner> on its
 * disk makes that runner say `busy`, wait that many seconds, then say `idle` (profiles/tiny/init).
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHostConfig } from '../harness/host-config.js';
import { startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { until } from '../harness/guests.js';
import { ensureTinyBuilt, TINY_DIR } from '../harness/tiny-profile.js';

const BIN = join(import.meta.dirname, '../../bin/corral.js');
const JOB_SECONDS = 3600;
let libvirtd: Libvirtd;
let root: string;
const profile = () => join(root, 'profiles', 'tiny');

beforeAll(async () => {
  await ensureTinyBuilt();
  libvirtd = await startLibvirtd();
  root = await mkdtemp(join(tmpdir(), 'corral-drain-'));
  await mkdir(join(profile(), 'provision'), { recursive: true });
  await cp(join(TINY_DIR, 'build'), join(profile(), 'build'), { recursive: true });
  await writeFile(
    join(profile(), 'profile.yaml'),
    `runners: 2
base: { file: build/base.qcow2 }
guest: { cpus: 1, memory: 128, kernel: build/vmlinuz, initrd: build/initrd.img, cmdline: "console=ttyS0 quiet" }
provision: { dir: provision, timeout: 90 }
rollout: { drainTimeout: 10m }
`,
  );
  await provision('v1', { 'ci-runner-tiny.2': JOB_SECONDS });
  await writeHostConfig(root, libvirtd.uri, ['keepTemplates: 1']);
}, 300_000);

afterAll(async () => {
  await libvirtd?.stop();
  await rm(root, { recursive: true, force: true });
});

/** A provision script that bakes `message` and, per runner name, how long its job runs. */
async function provision(message: string, jobs: Record<string, number>): Promise<void> {
  const lines = Object.entries(jobs).map(([runner, s]) => `echo ${s} >"$1/jobs/${runner}"`);
  await writeFile(
    join(profile(), 'provision', 'provision.sh'),
    `#!/bin/sh\nset -eu\necho "tiny ${message}" >"$1/baked"\nrm -rf "$1/jobs"; mkdir -p "$1/jobs"\n${lines.join('\n')}\n`,
  );
}

function corral(args: string[]) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn' },
  });
}

async function running(): Promise<string[]> {
  const out = (await execa('virsh', ['-c', libvirtd.uri, 'list', '--state-running', '--name'])).stdout;
  return out
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith('ci-runner-'))
    .sort();
}

/** What each running runner last said: ready, busy or idle (booting when nothing yet). */
async function conditions(): Promise<Record<string, string>> {
  const said: Record<string, string> = {};
  for (const name of await running()) {
    const text = await readFile(join(root, 'images', 'status', `${name}.status`), 'utf8').catch(() => '');
    said[name] =
      text
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => ['ready', 'busy', 'idle'].includes(l))
        .at(-1) ?? 'booting';
  }
  return said;
}

describe('drain', { timeout: 300_000 }, () => {
  it('a rollover leaves the busy runner to finish, rolls the others, and never runs out of ready runners', async () => {
    const first = await corral(['reconcile', '--once']);
    expect(first.exitCode, first.stdout + first.stderr).toBe(0);
    await until('ci-runner-tiny.2 to say busy', 30_000, async () =>
      (await conditions())['ci-runner-tiny.2'] === 'busy' ? true : undefined,
    );

    await provision('v2', {});
    let minReady = Infinity;
    let busyDestroyedEarly = false;
    let lastSaid2 = 'busy';
    let sampling = true;
    let draining = true;
    const sampler = (async () => {
      while (sampling) {
        const said = await conditions().catch(() => undefined);
        if (!said) break;
        minReady = Math.min(minReady, Object.values(said).filter((c) => c === 'ready' || c === 'idle').length);
        // Gone while the last thing it said was busy: destroyed mid-job.
        const now2 = said['ci-runner-tiny.2'];
        if (draining && now2 === undefined && lastSaid2 === 'busy') busyDestroyedEarly = true;
        if (now2 !== undefined) lastSaid2 = now2;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    const roll = await corral(['reconcile', '--once']);
    expect(roll.exitCode, roll.stdout + roll.stderr).toBe(0);
    // The others rolled; the busy one is still there, on the old template, and the plan says why.
    const said = await conditions();
    expect(said['ci-runner-tiny.2'], roll.stdout).toBe('busy');
    expect(Object.keys(said)).toHaveLength(3);
    expect(roll.stdout).toMatch(/waiting tiny: ci-runner-tiny\.2 is busy on outdated template \S+: draining/);
    const status = await corral(['status']);
    expect(status.stdout).toMatch(/ci-runner-tiny\.2 busy \(outdated\)/);

    // Past rollout.drainTimeout (not part of the image: no rebuild), it is destroyed mid-job, saying why.
    draining = false;
    expect(busyDestroyedEarly).toBe(false);
    const yaml = join(profile(), 'profile.yaml');
    await writeFile(yaml, (await readFile(yaml, 'utf8')).replace('drainTimeout: 10m', 'drainTimeout: 5s'));
    const after = await corral(['reconcile', '--once']);
    expect(after.exitCode, after.stdout + after.stderr).toBe(0);
    expect(after.stdout).toMatch(/ok +destroy-runner ci-runner-tiny\.2/);
    const events = (await readFile(join(root, 'state', 'events.jsonl'), 'utf8')).trim().split('\n');
    expect(JSON.parse(events.find((e) => e.includes('"destroy-runner","guest":"ci-runner-tiny.2"'))!)).toMatchObject({
      ok: true,
      reason: expect.stringMatching(
        /^busy for \S+ on outdated template \S+: beyond rollout.drainTimeout \(5s\), destroyed mid-job$/,
      ),
    });
    sampling = false;
    await sampler;
    expect(minReady).toBeGreaterThan(0);
    expect(await running()).toHaveLength(2);
    const plan = await corral(['plan', '--detailed-exitcode']);
    expect(plan.exitCode, plan.stdout).toBe(0);
  });
});
