import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach } from 'vitest';

export const CORRAL = fileURLToPath(new URL('../../bin/corral.js', import.meta.url));

export function assertBuilt(): void {
  if (!existsSync(fileURLToPath(new URL('../../dist/cli/commands/watch.js', import.meta.url))))
    throw new Error('dist/ has no watch command: run "npm run build" first');
}

export interface LogLine {
  level: number;
  time: number;
  msg: string;
  [key: string]: unknown;
}

export interface Fixture {
  root: string;
  config: string;
  src: string;
  stateDir: string;
  cleanup(): Promise<void>;
}

/** A temp dir with a host config whose first source is `src/` (no built-in profiles). */
export async function makeFixture(extraConfig = ''): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'corral-watch-'));
  const src = join(root, 'src');
  await mkdir(src);
  const config = join(root, 'corral.yaml');
  await writeConfig(config, extraConfig);
  return {
    root,
    config,
    src,
    stateDir: join(root, 'state'),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

export async function writeConfig(file: string, extra = '', sources = '  - {name: test, path: src}\n'): Promise<void> {
  await writeFile(file, `builtinProfiles: false\nhypervisor: memory\nsources:\n${sources}${extra}`);
}

/** A valid profile: runner count, a small base file and a provision script. */
export async function writeProfile(sourceDir: string, name: string, runners: number): Promise<string> {
  const dir = join(sourceDir, name);
  await mkdir(join(dir, 'provision'), { recursive: true });
  await writeFile(join(dir, 'base.img'), `base image of ${name}\n`);
  await writeFile(join(dir, 'provision', 'provision.sh'), '#!/bin/sh\necho provisioned\n');
  await writeFile(join(dir, 'profile.yaml'), profileYaml(runners));
  return dir;
}

export function profileYaml(runners: number): string {
  return `runners: ${runners}\nbase: {file: base.img}\n`;
}

export interface Watch {
  child: ChildProcess;
  logs: LogLine[];
  text: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  passesSince(time: number, trigger?: string): LogLine[];
}

/** Starts `corral watch` on the fixture; `wrap` runs it under another command (e.g. `unshare --mount`). */
export function startWatch(fx: Fixture, args: string[] = [], env: NodeJS.ProcessEnv = {}, wrap: string[] = []): Watch {
  const command = [process.execPath, CORRAL, 'watch', '--hypervisor', 'memory', '--config', fx.config];
  const [program, ...argv] = [...wrap, ...command, '--log-level', 'info', ...args];
  const child = spawn(program as string, argv, {
    env: { ...process.env, CORRAL_LOG_LEVEL: '', CORRAL_CONFIG: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  const text: string[] = [];
  let rest = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    const lines = (rest + chunk.toString()).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        text.push(line);
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const passesSince = (time: number, trigger?: string) =>
    logs.filter(
      (l) => l.msg === 'pass starting' && l.time >= time && (!trigger || (l.triggers as string[]).includes(trigger)),
    );
  return { child, logs, text, exited, passesSince };
}

/** Polls until `check` returns something truthy; generous deadlines instead of fixed sleeps. */
export async function waitFor<T>(
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  what: string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

interface MemoryGuest {
  name: string;
  state: string;
}

export async function guests(fx: Fixture): Promise<MemoryGuest[]> {
  const text = await readFile(join(fx.stateDir, 'memory-hypervisor.json'), 'utf8').catch(() => '');
  if (!text) return [];
  try {
    return (JSON.parse(text) as { guests: MemoryGuest[] }).guests;
  } catch {
    return [];
  }
}

export async function runners(fx: Fixture, profile: string): Promise<number> {
  return (await guests(fx)).filter((g) => g.name.startsWith(`ci-runner-${profile}.`) && g.state === 'running').length;
}

/** Waits until `profile` has exactly `count` running runners and the last pass changed nothing. */
export async function settled(fx: Fixture, w: Watch, counts: Record<string, number>): Promise<void> {
  await waitFor(
    async () => {
      for (const [profile, count] of Object.entries(counts)) if ((await runners(fx, profile)) !== count) return false;
      const last = w.logs.filter((l) => l.msg === 'pass starting' || l.msg === 'pass done').pop();
      return last?.msg === 'pass done' && Object.keys(last.actions as object).length === 0;
    },
    `runners ${JSON.stringify(counts)} and a quiet pass`,
  );
}

export async function stopWatch(w: Watch): Promise<void> {
  if (w.child.exitCode !== null || w.child.signalCode !== null) return;
  w.child.kill('SIGKILL');
  await w.exited;
}

export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CORRAL, ...args], {
      env: { ...process.env, CORRAL_LOG_LEVEL: 'warn', CORRAL_CONFIG: '', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }));
  });
}

/**
 * Per-test cleanups (run after each test, newest first) and the usual setup: a fixture with one
 * profile `p1` of 2 runners and a running watch on it.
 */
export function useWatchFixtures(): {
  defer: (cleanup: () => Promise<void>) => void;
  setup: (extraConfig?: string, env?: NodeJS.ProcessEnv) => Promise<{ fx: Fixture; w: Watch }>;
} {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  const defer = (cleanup: () => Promise<void>) => void cleanups.push(cleanup);
  const setup = async (extraConfig = '', env: NodeJS.ProcessEnv = {}) => {
    const fx = await makeFixture(extraConfig);
    defer(fx.cleanup);
    await writeProfile(fx.src, 'p1', 2);
    const w = startWatch(fx, [], env);
    defer(() => stopWatch(w));
    return { fx, w };
  };
  return { defer, setup };
}
