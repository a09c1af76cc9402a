/**
 * `corral gitlab` through the built binary on the memory backend, as gitlab-runner runs it: its
 * env vars, argument order, a SIGTERM to the stage's process group when a job is cancelled, and
 * the host config's ci.claimWait. Also where the memory backend keeps runners' seed files.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, REPO, aHostConfig, aProfileDir, cleanup, corral, tempRoot } from '../builders/profile-dir.js';

const BUILD_FAILURE = 37;
const SYSTEM_FAILURE = 38;
let root: string;
let config: string;

beforeAll(async () => {
  root = await tempRoot('corral-gitlab-cli-');
  await aProfileDir(join(root, 'src'), 'pool')
    .runners(1)
    .yaml({ ci: { gitlab: {} } })
    .write();
  await aProfileDir(join(root, 'src'), 'hooked')
    .runners(1)
    .yaml({ ci: { hook: { register: 'echo "secret-$CORRAL_RUNNER" > "$CORRAL_SEED_DIR/token"' } } })
    .write();
  config = await aHostConfig(root)
    .source('local', 'src')
    .set({ ci: { claimWait: '3s' } })
    .write();
  const r = await corral(['reconcile', '--once', '--config', config]);
  expect(r.exitCode, r.stderr).toBe(0);
});
afterAll(cleanup);

const env = (job: number, extra: Record<string, string> = {}) => ({
  CORRAL_MEMORY_SCRIPTS: 'host',
  CUSTOM_ENV_CI_JOB_ID: String(job),
  CUSTOM_ENV_CI_JOB_IMAGE: 'pool',
  BUILD_FAILURE_EXIT_CODE: String(BUILD_FAILURE),
  SYSTEM_FAILURE_EXIT_CODE: String(SYSTEM_FAILURE),
  ...extra,
});

describe('memory backend seed files', () => {
  it('are 0600 files in a 0700 dir per runner, never in the JSON state file', async () => {
    const file = join(root, 'state/memory-seeds/ci-runner-hooked.1/corral/token');
    expect(await readFile(file, 'utf8')).toBe('secret-ci-runner-hooked.1\n');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(join(root, 'state/memory-seeds/ci-runner-hooked.1/corral'))).mode & 0o777).toBe(0o700);
    expect(await readFile(join(root, 'state/memory-hypervisor.json'), 'utf8')).not.toContain('secret-');
  });
});

describe('corral gitlab on the memory backend', () => {
  it('SIGTERM to the run stage stops the script and exits BUILD_FAILURE with 143 in the exit-code file', async () => {
    const prepare = await corral(['gitlab', 'prepare', '--config', config], { env: env(1) });
    expect(prepare.exitCode, prepare.stderr).toBe(0);
    const scriptFile = join(root, 'build_script');
    const exitFile = join(root, 'exit-code');
    await writeFile(scriptFile, 'echo started\nsleep 60\necho never\n');
    // gitlab-runner starts each stage in a process group of its own and signals the group.
    const child = spawn(process.execPath, [BIN, 'gitlab', 'run', '--config', config, scriptFile, 'build_script'], {
      cwd: REPO,
      env: { ...process.env, CORRAL_LOG_LEVEL: 'warn', ...env(1, { BUILD_EXIT_CODE_FILE: exitFile }) },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('started')) process.kill(-child.pid!, 'SIGTERM');
    });
    const started = Date.now();
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(BUILD_FAILURE);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(stdout).not.toContain('never');
    expect(await readFile(exitFile, 'utf8')).toBe('143');
    expect(stderr).toContain('corral gitlab run: stopping (job cancelled or timed out)');
    expect(stderr).toContain(
      'corral: job 1 cancelled: stopped build_script in ci-runner-pool.1 (it ended with status 143)',
    );
  }, 60_000);

  it('prepare waits ci.claimWait for a free runner, then fails with SYSTEM_FAILURE', async () => {
    const started = Date.now();
    const r = await corral(['gitlab', 'prepare', '--config', config], { env: env(2) });
    expect(r.exitCode).toBe(SYSTEM_FAILURE);
    expect(Date.now() - started).toBeGreaterThanOrEqual(3000);
    // The wait it reports is measured: 3 s, or a little more on a loaded machine.
    expect(r.stderr).toMatch(
      /no free runner of profile pool after waiting \d+s \(ci\.claimWait\): 1 runner\(s\): 1 claimed by other jobs/,
    );
  }, 60_000);

  it('cleanup destroys the runner with its seed files', async () => {
    expect(existsSync(join(root, 'state/memory-seeds/ci-runner-pool.1/corral'))).toBe(true);
    const r = await corral(['gitlab', 'cleanup', '--config', config], { env: env(1) });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(existsSync(join(root, 'state/memory-guests/ci-runner-pool.1'))).toBe(false);
    expect(existsSync(join(root, 'state/memory-seeds/ci-runner-pool.1'))).toBe(false);
    expect(existsSync(join(root, 'state/memory-seeds/ci-runner-hooked.1'))).toBe(true);
    const status = await corral(['status', '--json', '--config', config]);
    const pool = (JSON.parse(status.stdout) as { profiles: { name: string; runners: { running: number } }[] }).profiles;
    expect(pool.find((p) => p.name === 'pool')?.runners.running).toBe(0);
  });
});
