/**
 * A real distribution end to end (examples/debian-12): the image is built from Debian
 * packages by its build-image.sh (cached by the script's content under /var/tmp, so only the first
 * run on a machine pays for it), then converged under TCG: a cloud-init build, two runners with
 * their own hostname, machine-id and SSH host keys, and a provision edit that rolls them with a
 * ready runner at every moment. Lean on purpose: each Debian boot costs ~30 s of TCG.
 */
import { appendFile, cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHostConfig } from '../harness/host-config.js';
import { startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { repoRoot } from '../harness/repo-root.js';

const BIN = join(import.meta.dirname, '../../bin/corral.js');
const EXAMPLE = join(repoRoot(), 'examples/debian-12');
let libvirtd: Libvirtd;
let root: string;
const profile = () => join(root, 'profiles', 'debian-12');

beforeAll(async () => {
  await execa('bash', [join(EXAMPLE, 'build-image.sh')], { stdio: 'inherit' });
  libvirtd = await startLibvirtd();
  root = await mkdtemp(join(tmpdir(), 'corral-debian-'));
  await cp(EXAMPLE, profile(), { recursive: true, filter: (src) => !src.endsWith('build-image.sh') });
  // Also a GitLab pool, so a job can be run on a distribution runner (issue: CI systems).
  await appendFile(join(profile(), 'profile.yaml'), 'ci: { gitlab: {} }\n');
  await writeHostConfig(root, libvirtd.uri, ['keepTemplates: 1']);
}, 900_000);

afterAll(async () => {
  await libvirtd?.stop();
  await rm(root, { recursive: true, force: true });
});

function corral(args: string[]) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn' },
  });
}

async function runningRunners(): Promise<string[]> {
  const out = (await execa('virsh', ['-c', libvirtd.uri, 'list', '--state-running', '--name'])).stdout;
  return out
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith('ci-runner-'))
    .sort();
}

async function readyCount(): Promise<number> {
  let n = 0;
  for (const name of await runningRunners()) {
    const said = await readFile(join(root, 'images', 'status', `${name}.status`), 'utf8').catch(() => '');
    if (/^ready$/m.test(said)) n++;
  }
  return n;
}

interface Identity {
  host: string;
  machineId: string;
  ssh: string;
}

async function identityOf(runner: string): Promise<Identity> {
  const log = await readFile(join(root, 'images', 'logs', `${runner}.console.log`), 'utf8');
  const m = /corral-identity: host=(\S+) machine-id=(\S+) ssh=(\S+)/.exec(log);
  if (!m) throw new Error(`${runner} printed no identity line; its console:\n${log.slice(-3000)}`);
  return { host: m[1]!, machineId: m[2]!, ssh: m[3]! };
}

/** The end of each runner's console, for a failure message. */
async function consoles(names: string[]): Promise<string> {
  const tails = await Promise.all(
    names.map(async (n) => {
      const log = await readFile(join(root, 'images', 'logs', `${n}.console.log`), 'utf8').catch(() => '(none)');
      return `--- ${n} (said: ${(await readFile(join(root, 'images', 'status', `${n}.status`), 'utf8').catch(() => '')).trim()})\n${log.slice(-2500)}`;
    }),
  );
  return tails.join('\n');
}

function expectDistinct(ids: Identity[], names: string[]): void {
  // The hostname is the runner's name with dots as dashes (a dot would start a domain).
  expect(ids.map((i) => i.host)).toEqual(names.map((n) => n.replace(/\./g, '-')));
  for (const id of ids) {
    expect(id.machineId).toMatch(/^[0-9a-f]{32}$/);
    expect(id.ssh).toMatch(/^SHA256:/);
  }
  expect(new Set(ids.map((i) => i.machineId)).size).toBe(ids.length);
  expect(new Set(ids.map((i) => i.ssh)).size).toBe(ids.length);
}

describe('debian-12 example under TCG', { timeout: 1_200_000 }, () => {
  it('builds with cloud-init, runs two runners with their own identities, and rolls them on an edit', async () => {
    const first = await corral(['reconcile', '--once']);
    expect(first.exitCode, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/ok +build ci-rebuild-debian-12@/);
    const v1 = await runningRunners();
    expect(v1).toEqual(['ci-runner-debian-12.1', 'ci-runner-debian-12.2']);
    // reconcile --once waits a while for booting runners; on a loaded host a second run goes on
    // waiting (what a runner says waits for corral to connect, so nothing is missed meanwhile).
    if ((await readyCount()) < 2) await corral(['reconcile', '--once']);
    expect(await readyCount(), await consoles(v1)).toBe(2);
    expectDistinct(await Promise.all(v1.map(identityOf)), v1);

    // An edit of the provisioning: a new template, runners rolled with a ready runner at every moment.
    const userData = join(profile(), 'provision', 'user-data');
    await writeFile(userData, (await readFile(userData, 'utf8')).replace('example v1', 'example v2'));
    let min = Infinity;
    let done = false;
    const roll = corral(['reconcile', '--once']).finally(() => (done = true));
    while (!done) {
      min = Math.min(min, await readyCount());
      await new Promise((r) => setTimeout(r, 500));
    }
    const rolled = await roll;
    expect(rolled.exitCode, rolled.stdout + rolled.stderr).toBe(0);
    expect(min).toBeGreaterThan(0);
    let v2 = await runningRunners();
    if (v2.length !== 2 || (await readyCount()) < 2) {
      await corral(['reconcile', '--once']);
      v2 = await runningRunners();
    }
    expect(v2).toHaveLength(2);
    expect(v2.some((n) => v1.includes(n))).toBe(false);
    expectDistinct(await Promise.all(v2.map(identityOf)), v2);
    const plan = await corral(['plan', '--detailed-exitcode']);
    expect(plan.exitCode, plan.stdout).toBe(0);

    // A GitLab job on a distribution runner: the script runs through Debian's qemu-guest-agent.
    const job = await mkdtemp(join(root, 'job-'));
    const exitFile = join(job, 'exit-code');
    const env = {
      CUSTOM_ENV_CI_JOB_ID: '7',
      CUSTOM_ENV_CI_JOB_IMAGE: 'debian-12',
      BUILD_FAILURE_EXIT_CODE: '11',
      SYSTEM_FAILURE_EXIT_CODE: '12',
      BUILD_EXIT_CODE_FILE: exitFile,
    };
    const gitlab = (stage: string, extra: string[] = []) =>
      execa('node', [BIN, 'gitlab', stage, '--config', join(root, 'corral.yaml'), ...extra], {
        reject: false,
        env: { CORRAL_LOG_LEVEL: 'warn', ...env },
      });
    const prepared = await gitlab('prepare');
    expect(prepared.exitCode, prepared.stderr).toBe(0);
    await writeFile(
      join(job, 'build_script'),
      '#!/bin/bash\necho "on $(hostname) as $(id -un)"\ngrep -c . /etc/os-release >/dev/null && echo os-ok\nexit 3\n',
    );
    const build = await gitlab('run', [join(job, 'build_script'), 'build_script']);
    expect(build.stdout, `${build.exitCode} ${build.stderr}`).toMatch(/on ci-runner-debian-12-\d+ as root\nos-ok/);
    expect(build.exitCode, build.stderr).toBe(11);
    expect(await readFile(exitFile, 'utf8')).toBe('3');

    // gitlab-runner cancels the job: SIGTERM to the stage's process group. Debian's agent runs the
    // script under setsid like the tiny guest's; the script and what it started are stopped.
    await writeFile(join(job, 'long_script'), '#!/bin/bash\necho started\nsleep 600 &\nwait\necho never\n');
    const long = execa(
      'node',
      [BIN, 'gitlab', 'run', '--config', join(root, 'corral.yaml'), join(job, 'long_script'), 'build_script'],
      { reject: false, detached: true, env: { CORRAL_LOG_LEVEL: 'warn', ...env } },
    );
    let longOut = '';
    long.stdout?.on('data', (d: Buffer) => {
      longOut += d.toString();
      if (longOut.includes('started')) process.kill(-long.pid!, 'SIGTERM');
    });
    const cancelled = await long;
    expect(cancelled.exitCode, cancelled.stderr).toBe(11);
    expect(cancelled.stdout).not.toContain('never');
    expect(await readFile(exitFile, 'utf8')).toBe('143');
    await writeFile(join(job, 'ps_script'), '#!/bin/bash\nps -eo args | grep -c "^[s]leep 600" || true\n');
    const ps = await gitlab('run', [join(job, 'ps_script'), 'build_script']);
    expect(ps.stdout.trim(), ps.stderr).toBe('0');
    expect((await gitlab('cleanup')).exitCode).toBe(0);
  });
});
