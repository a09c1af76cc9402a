import { readFileSync } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { LockBusyError } from '../errors.js';
import { sweepTempFiles, syncDir } from '../util/atomic-write.js';

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
  /** What is locked, for the busy message (default: "state dir <dir>", with the --wait hint). */
  label?: string;
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
      await writeSynced(temp, `${JSON.stringify(holder)}\n`);
      try {
        await link(temp, path);
        await syncDir(stateDir);
        // Only the lock holder writes the state dir: what a killed writer left half-done goes now.
        await sweepLeftovers(stateDir, holder.token);
        return { holder, release: () => releaseLock(path, holder.token) };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const current = await readLockFile(path);
      if (current.kind === 'none') continue; // released in between: try again
      if (current.kind === 'torn' || !isAlive(current.holder)) {
        if (await breakStaleLock(path, temp, current, opts.log)) continue;
        await new Promise((r) => setTimeout(r, 10)); // another process is breaking it right now
        continue;
      }
      if (!opts.wait) {
        const h = current.holder;
        const who = `pid ${h.pid} (corral ${h.command}, since ${h.startedAt})`;
        const what = opts.label ?? `state dir ${stateDir}`;
        throw new LockBusyError(`${what} is locked by ${who}${opts.label ? '' : '; use --wait to wait for it'}`, {
          pid: h.pid,
          command: h.command,
        });
      }
      // Nothing of ours lies around while we wait, so a signal that kills us now leaves no trace.
      await rm(temp, { force: true });
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
    }
  } finally {
    await rm(temp, { force: true });
  }
}

/** Written and fsync'd before it is linked into place, so a crash cannot leave a torn lock of ours. */
async function writeSynced(path: string, text: string): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

type LockFile = { kind: 'none' } | { kind: 'torn'; raw: string } | { kind: 'holder'; holder: LockHolder; raw: string };

/** A lock file that is empty or does not name a holder (torn by a crash, garbled by hand) has no live holder. */
async function readLockFile(path: string): Promise<LockFile> {
  let raw: string;
  try {
    raw = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
    // Unreadable (a dir, EACCES): nobody can prove a holder; breaking removes it like a torn file.
    return { kind: 'torn', raw: `<${(error as NodeJS.ErrnoException).code ?? 'unreadable'}>` };
  }
  const holder = parseHolder(raw);
  return holder ? { kind: 'holder', holder, raw } : { kind: 'torn', raw };
}

function parseHolder(raw: string): LockHolder | undefined {
  try {
    const value = JSON.parse(raw) as Partial<LockHolder> | null;
    if (
      value &&
      typeof value === 'object' &&
      Number.isInteger(value.pid) &&
      (value.pid ?? 0) > 0 &&
      typeof value.token === 'string' &&
      typeof value.host === 'string'
    )
      return { command: '?', startedAt: '?', ...value } as LockHolder;
  } catch {
    // not JSON: torn
  }
  return undefined;
}

/**
 * Temp files a killed lock holder can leave: the lock's own `lock.<token>` of dead processes, the
 * atomic writer's temp files, and a half-stored generation. Waiting processes' fresh temp files
 * are left alone (their holder is alive, or they are too new to judge).
 */
async function sweepLeftovers(stateDir: string, ownToken: string): Promise<void> {
  for (const name of await readdir(stateDir).catch(() => [] as string[])) {
    const match = /^lock\.([0-9a-f]{16})$/.exec(name);
    if (!match || match[1] === ownToken) continue;
    const file = join(stateDir, name);
    const state = await readLockFile(file);
    const old = await stat(file).then(
      (i) => Date.now() - i.mtimeMs > 60_000,
      () => false,
    );
    if ((state.kind === 'holder' && !isAlive(state.holder)) || (state.kind === 'torn' && old))
      await rm(file, { force: true });
  }
  await sweepTempFiles(stateDir);
  const compiled = join(stateDir, 'compiled');
  for (const name of await readdir(compiled).catch(() => [] as string[]))
    if (name.startsWith('.tmp-')) await rm(join(compiled, name), { recursive: true, force: true });
}

export function lockPath(stateDir: string): string {
  return join(stateDir, 'lock');
}

export async function readLockHolder(stateDir: string): Promise<LockHolder | undefined> {
  const state = await readLockFile(lockPath(stateDir));
  return state.kind === 'holder' ? state.holder : undefined;
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
async function breakStaleLock(path: string, temp: string, stale: LockFile, log: Logger): Promise<boolean> {
  const breaker = `${path}.break`;
  try {
    await link(temp, breaker);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const other = await readLockFile(breaker);
    if (other.kind === 'none') return true; // just finished: look again
    if (other.kind === 'holder' && isAlive(other.holder)) return false;
    await rm(breaker, { force: true }); // left by a process that died while breaking
    return true;
  }
  try {
    // Only a breaker removes someone else's lock, and a new lock appears only where none is, so
    // reading the same bytes here means the file is still the dead (or torn) holder's.
    const now = await readLockFile(path);
    if (now.kind !== 'none' && stale.kind !== 'none' && now.raw === stale.raw) {
      if (stale.kind === 'holder')
        log.warn(
          { pid: stale.holder.pid, command: stale.holder.command },
          'taking over a stale lock left by a process that no longer runs',
        );
      else
        log.warn(
          { lock: path, content: stale.raw.slice(0, 80) },
          'taking over a torn lock (empty or garbled: its writer died mid-write or it was edited)',
        );
      await rm(path, { recursive: true, force: true });
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
