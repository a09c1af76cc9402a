import { readFileSync } from 'node:fs';
import { link, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { LockBusyError } from '../errors.js';

export interface LockHolder {
  pid: number;
  command: string;
  token: string;
  host: string;
  startedAt: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat), so a reused pid is not taken for it. */
  pidStart?: string;
}

export interface Lock {
  holder: LockHolder;
  release(): Promise<void>;
}

export interface LockOptions {
  command: string;
  wait?: boolean;
  log: Logger;
  /** Poll interval while waiting. */
  pollMs?: number;
}

/**
 * One writer per state dir. The lock file is written whole under a temp name and then hard-linked
 * into place, so it is never seen half-written, and `link` fails atomically when it already exists.
 */
export async function acquireLock(stateDir: string, opts: LockOptions): Promise<Lock> {
  await mkdir(stateDir, { recursive: true });
  const path = lockPath(stateDir);
  const pidStart = processStart(process.pid);
  const holder: LockHolder = {
    pid: process.pid,
    command: opts.command,
    token: randomBytes(8).toString('hex'),
    host: hostname(),
    startedAt: new Date().toISOString(),
    ...(pidStart ? { pidStart } : {}),
  };
  const temp = `${path}.${holder.token}`;
  try {
    for (;;) {
      await writeFile(temp, `${JSON.stringify(holder)}\n`);
      try {
        await link(temp, path);
        return { holder, release: () => releaseLock(path, holder.token) };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const current = await readLockHolder(stateDir);
      if (current && !isAlive(current)) {
        if (await breakStaleLock(path, temp, current, opts.log)) continue;
        await new Promise((r) => setTimeout(r, 10)); // another process is breaking it right now
        continue;
      }
      if (!opts.wait) {
        const who = current ? `pid ${current.pid} (corral ${current.command}, since ${current.startedAt})` : 'another process';
        throw new LockBusyError(`state dir ${stateDir} is locked by ${who}; use --wait to wait for it`, { pid: current?.pid ?? 0, command: current?.command ?? '?' });
      }
      // Nothing of ours lies around while we wait, so a signal that kills us now leaves no trace.
      await rm(temp, { force: true });
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
    }
  } finally {
    await rm(temp, { force: true });
  }
}

export function lockPath(stateDir: string): string {
  return join(stateDir, 'lock');
}

export async function readLockHolder(stateDir: string): Promise<LockHolder | undefined> {
  return readHolderFile(lockPath(stateDir));
}

async function readHolderFile(path: string): Promise<LockHolder | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as LockHolder;
  } catch {
    return undefined;
  }
}

/** A holder on another host cannot be checked, so it counts as alive. */
export function isAlive(holder: LockHolder): boolean {
  if (holder.host !== hostname()) return true;
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  // The pid runs, but it may have been reused by another process since the holder died.
  return holder.pidStart === undefined || processStart(holder.pid) === holder.pidStart;
}

/** Field 22 of /proc/<pid>/stat (start time); undefined where /proc is not there. */
function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * Removes a dead holder's lock file. Two processes that both saw it stale must not both remove it
 * (the second would delete the first one's fresh lock), so breaking is serialized by `lock.break`,
 * taken exactly like the lock itself. Returns false when another live process is breaking it.
 */
async function breakStaleLock(path: string, temp: string, stale: LockHolder, log: Logger): Promise<boolean> {
  const breaker = `${path}.break`;
  try {
    await link(temp, breaker);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const other = await readHolderFile(breaker);
    if (!other) return true; // just finished: look again
    if (isAlive(other)) return false;
    await rm(breaker, { force: true }); // left by a process that died while breaking
    return true;
  }
  try {
    // Only a breaker removes someone else's lock, and a new lock appears only where none is, so
    // reading the stale token here means the file is still the dead holder's.
    if ((await readHolderFile(path))?.token === stale.token) {
      log.warn({ pid: stale.pid, command: stale.command }, 'taking over a stale lock left by a process that no longer runs');
      await rm(path, { force: true });
    }
  } finally {
    await rm(breaker, { force: true });
  }
  return true;
}

async function releaseLock(path: string, token: string): Promise<void> {
  const current = await readFile(path, 'utf8').catch(() => '');
  if (current.includes(token)) await rm(path, { force: true });
}
