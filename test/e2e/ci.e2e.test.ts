/**
 * CI systems against a real, isolated libvirtd booting tiny guests, through the real `corral`
 * binary: GitHub JIT runners (the documented fake GitHub server over loopback) and gitlab-runner's
 * custom executor driven stage by stage exactly as gitlab-runner does (its env vars, argument
 * order, sub-stages and exit-code file).
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHostConfig } from '../harness/host-config.js';
import { startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { ensureTinyBuilt, TINY_DIR } from '../harness/tiny-profile.js';
import { FAKE_GITHUB_TOKEN, startFakeGitHub, type FakeGitHub } from '../harness/fake-github.js';

const BIN = join(import.meta.dirname, '../../bin/corral.js');
const HOST = 'e2e-host';
const BUILD_FAILURE = 37;
const SYSTEM_FAILURE = 38;
let libvirtd: Libvirtd;
let gh: FakeGitHub;
let root: string;

beforeAll(async () => {
  await ensureTinyBuilt();
  [libvirtd, gh] = await Promise.all([startLibvirtd(), startFakeGitHub()]);
  root = await mkdtemp(join(tmpdir(), 'corral-ci-e2e-'));
  await writeFile(join(root, 'gh-token'), FAKE_GITHUB_TOKEN, { mode: 0o600 });
  for (const name of ['gh', 'pool']) {
    const dir = join(root, 'profiles', name);
    await mkdir(dir, { recursive: true });
    await cp(join(TINY_DIR, 'build'), join(dir, 'build'), { recursive: true });
    await cp(join(TINY_DIR, 'provision'), join(dir, 'provision'), { recursive: true });
  }
  const common = `base: { file: build/base.qcow2 }
guest: { cpus: 1, memory: 128, kernel: build/vmlinuz, initrd: build/initrd.img, cmdline: "console=ttyS0 quiet" }
provision: { dir: provision, entry: provision.sh, timeout: 90 }
`;
  await writeFile(
    join(root, 'profiles/gh/profile.yaml'),
    `runners: 2\n${common}ci:\n  github: { api: "${gh.url}", owner: acme, repo: widgets, labels: [tiny], tokenFile: ${join(root, 'gh-token')} }\n`,
  );
  await writeFile(
    join(root, 'profiles/pool/profile.yaml'),
    `runners: 2\n${common}ci: { gitlab: { buildsDir: /tmp/builds } }\n`,
  );
  await writeHostConfig(root, libvirtd.uri, [
    'concurrency: { builds: 2, clones: 4 }',
    // A short claim wait: the two prepares with no free runner fail after it (docs/ci.md).
    `ci: { host: ${HOST}, backoffInitial: 1s, backoffMax: 2s, claimWait: 4s }`,
  ]);
}, 300_000);

afterAll(async () => {
  await libvirtd?.stop();
  await gh?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

function corral(args: string[], env: Record<string, string> = {}) {
  return execa('node', [BIN, ...args, '--config', join(root, 'corral.yaml')], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn', ...env },
    extendEnv: true,
  });
}

/** The environment gitlab-runner gives every stage of one job. */
function jobEnv(job: number, image: string, exitCodeFile?: string): Record<string, string> {
  return {
    CUSTOM_ENV_CI_JOB_ID: String(job),
    CUSTOM_ENV_CI_JOB_IMAGE: image,
    CUSTOM_ENV_CI_PROJECT_PATH: 'acme/widgets',
    BUILD_FAILURE_EXIT_CODE: String(BUILD_FAILURE),
    SYSTEM_FAILURE_EXIT_CODE: String(SYSTEM_FAILURE),
    ...(exitCodeFile ? { BUILD_EXIT_CODE_FILE: exitCodeFile } : {}),
  };
}

/** gitlab-runner appends <script> <sub-stage> to run_args: `corral gitlab run --config F <script> <stage>`. */
function gitlab(stage: string, env: Record<string, string>, extra: string[] = []) {
  return execa('node', [BIN, 'gitlab', stage, '--config', join(root, 'corral.yaml'), ...extra], {
    reject: false,
    env: { CORRAL_LOG_LEVEL: 'warn', ...env },
  });
}

async function virsh(...args: string[]): Promise<string> {
  return (await execa('virsh', ['-c', libvirtd.uri, ...args])).stdout;
}

async function runners(): Promise<string[]> {
  return (await virsh('list', '--all', '--name'))
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith('ci-runner-'))
    .sort();
}

async function consoleLine(runner: string, pattern: RegExp): Promise<string> {
  const log = join(root, 'images', 'logs', `${runner}.console.log`);
  for (let i = 0; i < 240; i++) {
    const match = pattern.exec(existsSync(log) ? await readFile(log, 'utf8') : '');
    if (match) return match[0];
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${runner} never printed ${pattern}`);
}

async function isoFile(iso: string, path: string): Promise<string> {
  return (await execa('isoinfo', ['-R', '-i', iso, '-x', path])).stdout;
}

const registered = () => [...gh.runners.values()].map((r) => r.name).sort();

describe('CI on real guests', () => {
  it('converges both pools; each GitHub runner boots with the JIT config issued for exactly its name', async () => {
    const r = await corral(['reconcile', '--once']);
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(await runners()).toEqual(['ci-runner-gh.1', 'ci-runner-gh.2', 'ci-runner-pool.1', 'ci-runner-pool.2']);
    expect(registered()).toEqual([`ci-runner-gh.1@${HOST}`, `ci-runner-gh.2@${HOST}`]);
    for (const runner of ['ci-runner-gh.1', 'ci-runner-gh.2']) {
      const issued = gh.issued.filter((i) => i.name === `${runner}@${HOST}`);
      expect(issued).toHaveLength(1);
      expect(issued[0]!.labels).toEqual(['self-hosted', 'X64', 'corral-gh', 'tiny']);
      const iso = join(root, 'images', 'seeds', 'runners', `${runner}.iso`);
      expect(await isoFile(iso, '/corral/github-jitconfig')).toBe(issued[0]!.encodedJitConfig);
      // The guest got it: its init prints its name and the corral/ files it found.
      await consoleLine(
        runner,
        new RegExp(`corral-runner: name ${runner.replace('.', '\\.')}; corral/ files: github-jitconfig`),
      );
    }
    // The secret is in no log, event or status.
    const secret = gh.issued[0]!.encodedJitConfig;
    const status = await corral(['status', '--json']);
    for (const text of [status.stdout, r.stdout, r.stderr, await readFile(join(root, 'state', 'events.jsonl'), 'utf8')])
      expect(text).not.toContain(secret);
    const pool = (JSON.parse(status.stdout) as { profiles: { name: string; ci: { runners: unknown[] } }[] }).profiles;
    expect(pool.find((p) => p.name === 'gh')?.ci.runners).toEqual([
      { name: 'ci-runner-gh.1', state: 'registered (offline)' },
      { name: 'ci-runner-gh.2', state: 'registered (offline)' },
    ]);
  }, 240_000);

  it('gitlab: config, 4 concurrent prepares on a pool of 2, run with output and exit codes, cancel, cleanup', async () => {
    const config = await gitlab('config', jobEnv(1, 'pool'));
    expect(config.exitCode, config.stderr).toBe(0);
    expect(JSON.parse(config.stdout)).toEqual({
      builds_dir: '/tmp/builds',
      cache_dir: '/cache',
      builds_dir_is_shared: false,
      hostname: HOST,
      driver: { name: 'corral', version: expect.any(String) },
    });

    const prepares = await Promise.all([1, 2, 3, 4].map((job) => gitlab('prepare', jobEnv(job, 'pool'))));
    const ok = prepares.filter((p) => p.exitCode === 0);
    const failed = prepares.filter((p) => p.exitCode !== 0);
    expect(ok, prepares.map((p) => p.stderr).join('\n')).toHaveLength(2);
    expect(failed.map((p) => p.exitCode)).toEqual([SYSTEM_FAILURE, SYSTEM_FAILURE]);
    // They waited ci.claimWait (4 s) for a runner to come free, then failed cleanly.
    for (const f of failed)
      expect(f.stderr).toMatch(
        /no free runner of profile pool after waiting \d+s \(ci\.claimWait\): 2 runner\(s\): 2 claimed by other jobs/,
      );
    const held = ok.map((p) => /runs on (ci-runner-pool\.\d)/.exec(p.stderr)?.[1]).sort();
    expect(held).toEqual(['ci-runner-pool.1', 'ci-runner-pool.2']);
    const jobs = prepares.map((p, i) => (p.exitCode === 0 ? i + 1 : 0)).filter(Boolean);

    // A pass while both are claimed leaves them alone, even though the profile now wants fewer.
    await writeFile(
      join(root, 'profiles/pool/profile.yaml'),
      (await readFile(join(root, 'profiles/pool/profile.yaml'), 'utf8')).replace('runners: 2', 'runners: 1'),
    );
    const pass = await corral(['reconcile', '--once']);
    expect(pass.exitCode, pass.stderr).toBe(0);
    expect((await runners()).filter((n) => n.includes('pool'))).toEqual(['ci-runner-pool.1', 'ci-runner-pool.2']);

    // Sub-stages in gitlab-runner's order; the script file is the runner's, the args come last.
    const dir = await mkdtemp(join(root, 'job-'));
    const exitFile = join(dir, 'exit-code');
    const env = jobEnv(jobs[0]!, 'pool', exitFile);
    await writeFile(join(dir, 'prepare_script'), 'echo "Running on $(hostname)"\n');
    await writeFile(
      join(dir, 'build_script'),
      '#!/bin/sh\necho "line one"\necho "to stderr" >&2\ncat /etc/tiny-release 2>/dev/null; echo done\nexit 3\n',
    );
    const prep = await gitlab('run', env, [join(dir, 'prepare_script'), 'prepare_script']);
    expect(prep.exitCode, prep.stderr).toBe(0);
    expect(prep.stdout).toMatch(/Running on ci-runner-pool-\d/); // the hostname: dots as dashes
    const build = await gitlab('run', env, [join(dir, 'build_script'), 'build_script']);
    expect(build.stdout, `exit ${build.exitCode}: ${build.stderr}`).toContain('line one\nto stderr\n');
    expect(build.stdout).toContain('done');
    expect(build.exitCode).toBe(BUILD_FAILURE);
    expect(await readFile(exitFile, 'utf8')).toBe('3');

    // gitlab-runner cancels the job (or it times out): SIGTERM to the stage's process group. The
    // script and what it started are stopped inside the guest; the stage reports how it ended.
    await writeFile(join(dir, 'long_script'), 'echo started\nsleep 600 &\nwait\necho never\n');
    const long = execa(
      'node',
      [BIN, 'gitlab', 'run', '--config', join(root, 'corral.yaml'), join(dir, 'long_script'), 'build_script'],
      {
        reject: false,
        detached: true,
        env: { CORRAL_LOG_LEVEL: 'warn', ...env },
      },
    );
    let longOut = '';
    long.stdout?.on('data', (d: Buffer) => {
      longOut += d.toString();
      if (longOut.includes('started')) process.kill(-long.pid!, 'SIGTERM');
    });
    const cancelled = await long;
    expect(cancelled.exitCode, cancelled.stderr).toBe(BUILD_FAILURE);
    expect(cancelled.stdout).not.toContain('never');
    expect(cancelled.stderr).toMatch(
      /cancelled: stopped build_script in ci-runner-pool\.\d \(it ended with status 143\)/,
    );
    expect(await readFile(exitFile, 'utf8')).toBe('143');
    await writeFile(join(dir, 'ps_script'), 'ps | grep -c "[s]leep 600" || true\n');
    const ps = await gitlab('run', env, [join(dir, 'ps_script'), 'build_script']);
    expect(ps.stdout.trim(), ps.stderr).toBe('0');

    // A job that holds no runner (prepare failed) is a system failure, not a build failure.
    const stray = await gitlab('run', jobEnv(99, 'pool'), [join(dir, 'build_script'), 'build_script']);
    expect(stray.exitCode).toBe(SYSTEM_FAILURE);

    const status = JSON.parse((await corral(['status', '--json'])).stdout) as {
      profiles: { name: string; ci: { runners: { name: string; state: string }[] } }[];
    };
    const states = status.profiles.find((p) => p.name === 'pool')!.ci.runners.map((r) => r.state);
    expect(states.every((s) => s.startsWith('busy (claimed by job'))).toBe(true);

    for (const job of jobs) expect((await gitlab('cleanup', jobEnv(job, 'pool'))).exitCode).toBe(0);
    expect((await runners()).filter((n) => n.includes('pool'))).toEqual([]);
    const after = await corral(['reconcile', '--once']);
    expect(after.exitCode, after.stderr).toBe(0);
    expect((await runners()).filter((n) => n.includes('pool'))).toEqual(['ci-runner-pool.1']);
  }, 240_000);

  it('gitlab: an image that is no gitlab pool is a clean system failure', async () => {
    for (const image of ['nope', 'gh']) {
      const r = await gitlab('prepare', jobEnv(50, image));
      expect(r.exitCode).toBe(SYSTEM_FAILURE);
      expect(r.stderr).toContain(`image "${image}" is not a corral profile with ci.gitlab (allowed: pool)`);
    }
  });

  it('github: a guest destroyed by hand and a leftover registration are deleted on the next pass', async () => {
    gh.addRunner('repos/acme/widgets', `ci-runner-gh.9@${HOST}`);
    gh.addRunner('repos/acme/widgets', 'ci-runner-gh.9@other-host');
    const before = [...gh.runners.values()].find((r) => r.name === `ci-runner-gh.2@${HOST}`)!.id;
    await virsh('destroy', 'ci-runner-gh.2');
    await virsh('undefine', 'ci-runner-gh.2');
    const r = await corral(['reconcile', '--once']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(registered()).toEqual([`ci-runner-gh.1@${HOST}`, `ci-runner-gh.2@${HOST}`, 'ci-runner-gh.9@other-host']);
    expect(gh.runners.has(before)).toBe(false);
    expect(await runners()).toContain('ci-runner-gh.2');
  }, 120_000);

  it('github down: the other pool still converges, nothing crashes, status says why', async () => {
    gh.down('503');
    await virsh('destroy', 'ci-runner-gh.1'); // shut off: its job is done, it wants a replacement
    await virsh('destroy', 'ci-runner-pool.1');
    const r = await corral(['reconcile', '--once']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/waiting gh: GitHub: 503 Service Unavailable since \d\d:\d\d, retry at \d\d:\d\d/);
    const names = await runners();
    expect(names).toContain('ci-runner-pool.1');
    expect(names).toContain('ci-runner-gh.2'); // kept
    const status = await corral(['status']);
    expect(status.exitCode).toBe(0);
    expect(status.stdout).toMatch(/ci: github, FAILING: GitHub: 503 Service Unavailable since/);
    gh.down(undefined);
    await new Promise((res) => setTimeout(res, 2100));
    const back = await corral(['reconcile', '--once']);
    expect(back.exitCode, back.stderr).toBe(0);
    expect(await runners()).toContain('ci-runner-gh.1');
    expect(registered()).toContain(`ci-runner-gh.1@${HOST}`);
  }, 180_000);
});
