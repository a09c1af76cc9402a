/**
 * Generic CI hooks: operator commands run on the host around a runner's life. `register` may
 * write files into CORRAL_SEED_DIR; they land on the runner's seed under corral/. A failing hook
 * is a transient error for that runner, its stderr carried in the message (and so in the events).
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { ForgeError } from '../github/forge-error.js';

export interface HookContext {
  runner: string;
  profile: string;
  host: string;
  /** The profile dir: hooks run there, so `./register.sh` works. */
  cwd: string;
  timeoutSeconds: number;
  env: NodeJS.ProcessEnv;
}

/** Runs the register hook; returns what it wrote into the seed dir (name relative to it → content). */
export async function runRegisterHook(command: string, ctx: HookContext): Promise<Record<string, string>> {
  const seedDir = await mkdtemp(path.join(os.tmpdir(), 'corral-hook-seed-'));
  try {
    await runHook('register', command, ctx, seedDir);
    return await readSeedDir(seedDir);
  } finally {
    await rm(seedDir, { recursive: true, force: true });
  }
}

export async function runDeregisterHook(command: string, ctx: HookContext): Promise<void> {
  const seedDir = await mkdtemp(path.join(os.tmpdir(), 'corral-hook-seed-'));
  try {
    await runHook('deregister', command, ctx, seedDir);
  } finally {
    await rm(seedDir, { recursive: true, force: true });
  }
}

async function runHook(which: string, command: string, ctx: HookContext, seedDir: string): Promise<void> {
  const result = await execa('/bin/sh', ['-c', command], {
    cwd: ctx.cwd,
    env: {
      ...ctx.env,
      CORRAL_RUNNER: ctx.runner,
      CORRAL_PROFILE: ctx.profile,
      CORRAL_HOST: ctx.host,
      CORRAL_SEED_DIR: seedDir,
      CORRAL_HOOK: which,
    },
    extendEnv: false,
    stdin: 'ignore',
    timeout: ctx.timeoutSeconds * 1000,
    reject: false,
    all: false,
  });
  if (result.exitCode === 0 && !result.timedOut) return;
  const stderr = (typeof result.stderr === 'string' ? result.stderr : '').trim();
  const tail = stderr.split('\n').slice(-5).join(' | ');
  const how = result.timedOut
    ? `timed out after ${ctx.timeoutSeconds}s`
    : `exited with status ${result.exitCode ?? result.signal}`;
  throw new ForgeError('hook', `${which} ${how}${tail ? `: ${tail}` : ''}`);
}

async function readSeedDir(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    files[path.relative(dir, full)] = await readFile(full, 'utf8');
  }
  return files;
}
