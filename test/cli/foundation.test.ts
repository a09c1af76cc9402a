/** The CLI frame (docs/design.md, "CLI") through the built binary: help, errors, exit codes. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  REPO,
  aHostConfig,
  aProfileDir,
  cleanup,
  corral,
  corralInProcess,
  stackLines,
  tempRoot,
  type CliResult,
} from '../builders/profile-dir.js';

afterAll(cleanup);

function commandsIn(help: string): string[] {
  const section = help.split('Commands:\n')[1]?.split('\n\n')[0] ?? '';
  return section.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '');
}

describe('corral CLI frame', () => {
  it('--help lists the commands, and every one of them has --help (exit 0, Usage)', async () => {
    const top = await corral(['--help']);
    expect(top.exitCode).toBe(0);
    expect(top.stdout).toContain('Usage: corral <command>');
    const names = commandsIn(top.stdout);
    expect(names).toEqual(expect.arrayContaining(['validate', 'sources', 'compile']));
    const results = await Promise.all(names.map((name) => corralInProcess([name, '--help'])));
    results.forEach((r, i) => {
      expect(r.exitCode, `${names[i]} --help: ${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: corral ${names[i]}\\b`));
      expect(r.stdout).toContain('--config FILE');
      expect(r.stderr).toBe('');
    });
  });

  it('no command at all: usage on stderr, exit 1', async () => {
    const r = await corralInProcess([]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('Usage: corral <command>');
  });

  it('an unknown command: exit 1 with a one-line message', async () => {
    const r = await corral(['frobnicate']);
    expectOneLineError(r, 'corral: unknown command "frobnicate"; run "corral --help" for the list');
  });

  it('an unknown option: exit 1 with a one-line message', async () => {
    expectOneLineError(await corral(['validate', '--frob']), `corral validate: Unknown option '--frob'`);
    expectOneLineError(await corralInProcess(['sources', '-q']), `corral sources: Unknown option '-q'`);
    expectOneLineError(
      await corralInProcess(['validate', '--config']),
      `corral validate: Option '--config <value>' argument missing`,
    );
    expectOneLineError(
      await corralInProcess(['validate', '--log-level', 'loud']),
      'corral validate: --log-level must be one of',
    );
  });

  it('global options may come before the command', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'src'), 'web').write();
    const config = await aHostConfig(root).source('local', 'src').write();
    const r = await corralInProcess(['--config', config, '--log-level', 'warn', 'validate']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe('ok: 1 profile(s) from 1 source(s)\n');
  });

  it('validate --json prints the problems as data on stdout', async () => {
    const root = await tempRoot();
    const { file } = await aProfileDir(join(root, 'src'), 'web').yaml({ runner: 1 }).write();
    const config = await aHostConfig(root).source('local', 'src').write();
    const r = await corralInProcess(['validate', '--json', '--config', config]);
    expect(r.exitCode).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({
      ok: false,
      profiles: [],
      problems: [{ file, where: '/runner', severity: 'error', message: 'unknown key "runner"' }],
    });
  });
});

describe('corral on the built-in profiles and a second source', () => {
  it('`npx corral validate` on the built-in profiles exits 0', async () => {
    const r = await run('npx', ['--no-install', 'corral', 'validate'], REPO);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ok: [1-9]\d* profile\(s\) from 1 source\(s\)\n$/);
  });

  it('a second source with a profile conflicting with a built-in one: exit 1 naming both files', async () => {
    const root = await tempRoot();
    const { file } = await aProfileDir(join(root, 'mine'), 'tiny').write();
    const config = await aHostConfig(root).builtinProfiles(true).source('mine', 'mine').write();
    const r = await corral(['validate', '--config', config]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `${file}: profile "tiny" is already defined in ${join(REPO, 'profiles', 'tiny', 'profile.yaml')}`,
    );
    expect(stackLines(r.stderr)).toEqual([]);
  });

  it('`corral sources` shows each profile with its source, file and inputs hash', async () => {
    const r = await corralInProcess(['sources', '--json'], { env: {} });
    expect(r.exitCode, r.stderr).toBe(0);
    const parsed = JSON.parse(r.stdout) as {
      profiles: { name: string; source: string; file: string; inputsHash: string }[];
    };
    expect(parsed.profiles).toContainEqual(
      expect.objectContaining({
        name: 'tiny',
        source: 'builtin',
        file: join(REPO, 'profiles', 'tiny', 'profile.yaml'),
        inputsHash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      }),
    );
  });
});

function expectOneLineError(r: CliResult, start: string): void {
  expect(r.exitCode).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr.startsWith(start), r.stderr).toBe(true);
  expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
}

function run(cmd: string, args: string[], cwd: string): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, CORRAL_LOG_LEVEL: 'warn' };
    delete env.CORRAL_CONFIG;
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (exitCode) => resolve({ exitCode, stdout, stderr }));
  });
}
