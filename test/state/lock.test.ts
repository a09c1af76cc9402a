import { spawn } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { pino, type Logger } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { LockBusyError } from '../../src/errors.js';
import { acquireLock, lockPath, readLockHolder } from '../../src/state/lock.js';
import { cleanup, tempRoot } from '../builders/profile-dir.js';

afterAll(cleanup);

/** A logger that records what it was asked to say. */
function recordingLog(): { log: Logger; lines: { level: number; msg: string; pid?: number }[] } {
  const lines: { level: number; msg: string; pid?: number }[] = [];
  const log = pino({ level: 'trace' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  return { log, lines };
}

/** The pid of a process that has certainly exited. */
async function deadPid(): Promise<number> {
  const child = spawn('true', { stdio: 'ignore' });
  const pid = child.pid;
  await new Promise((r) => child.on('exit', r));
  if (pid === undefined) throw new Error('no pid');
  return pid;
}

async function writeHolder(stateDir: string, pid: number, command = 'reconcile', host = hostname()): Promise<void> {
  const holder = { pid, command, token: 'f'.repeat(16), host, startedAt: '2026-11-24T10:00:00.000Z' };
  await writeFile(lockPath(stateDir), `${JSON.stringify(holder)}\n`);
}

describe('state-dir lock', () => {
  it('a second acquire fails fast naming the holder pid and command', async () => {
    const stateDir = await tempRoot();
    const { log } = recordingLog();
    const first = await acquireLock(stateDir, { command: 'watch', log });
    const started = Date.now();
    const second = acquireLock(stateDir, { command: 'compile', log });
    await expect(second).rejects.toBeInstanceOf(LockBusyError);
    const error = (await second.catch((e: unknown) => e)) as LockBusyError;
    expect(Date.now() - started).toBeLessThan(1000);
    expect(error.holder).toEqual({ pid: process.pid, command: 'watch' });
    expect(error.message).toContain(`pid ${process.pid}`);
    expect(error.message).toContain('corral watch');
    expect(error.message).toContain('--wait');
    await first.release();
  });

  it('with wait: true gets the lock once the holder releases it', async () => {
    const stateDir = await tempRoot();
    const { log } = recordingLog();
    const first = await acquireLock(stateDir, { command: 'reconcile', log });
    let got = false;
    const second = acquireLock(stateDir, { command: 'compile', wait: true, log, pollMs: 10 }).then((l) => {
      got = true;
      return l;
    });
    await new Promise((r) => setTimeout(r, 60));
    expect(got).toBe(false);
    await first.release();
    const lock = await second;
    expect((await readLockHolder(stateDir))?.token).toBe(lock.holder.token);
    expect((await readLockHolder(stateDir))?.command).toBe('compile');
    await lock.release();
  });

  it('takes over a stale lock whose process is gone, with a warning', async () => {
    const stateDir = await tempRoot();
    const pid = await deadPid();
    await writeHolder(stateDir, pid);
    const { log, lines } = recordingLog();
    const lock = await acquireLock(stateDir, { command: 'compile', log });
    expect((await readLockHolder(stateDir))?.pid).toBe(process.pid);
    const warning = lines.find((l) => l.level === 40);
    expect(warning?.msg).toMatch(/stale lock/);
    expect(warning?.pid).toBe(pid);
    await lock.release();
  });

  it('takes over a lock whose pid was reused by another process (start time differs)', async () => {
    const stateDir = await tempRoot();
    const holder = {
      pid: process.ppid,
      command: 'watch',
      token: 'e'.repeat(16),
      host: hostname(),
      startedAt: 'then',
      pidStart: '1',
    };
    await writeFile(lockPath(stateDir), `${JSON.stringify(holder)}\n`);
    const { log, lines } = recordingLog();
    const lock = await acquireLock(stateDir, { command: 'compile', log });
    expect(lines.find((l) => l.level === 40)?.msg).toMatch(/stale lock/);
    expect((await readLockHolder(stateDir))?.pidStart).toMatch(/^\d+$/);
    await lock.release();
  });

  it('leaves no temp file while it waits for the lock', async () => {
    const stateDir = await tempRoot();
    const { log } = recordingLog();
    const first = await acquireLock(stateDir, { command: 'watch', log });
    const waiting = acquireLock(stateDir, { command: 'reconcile --once', wait: true, log, pollMs: 1000 });
    await new Promise((r) => setTimeout(r, 300));
    expect((await readdir(stateDir)).sort()).toEqual(['lock']);
    await first.release();
    await (await waiting).release();
  });

  it('does not take over a lock held by a live process or one on another host', async () => {
    const stateDir = await tempRoot();
    const { log } = recordingLog();
    await writeHolder(stateDir, await deadPid(), 'watch', 'some-other-host');
    await expect(acquireLock(stateDir, { command: 'compile', log })).rejects.toBeInstanceOf(LockBusyError);
    await writeHolder(stateDir, process.ppid, 'watch');
    await expect(acquireLock(stateDir, { command: 'compile', log })).rejects.toBeInstanceOf(LockBusyError);
  });

  it('two processes racing to take over one stale lock: exactly one wins', async () => {
    const dead = await deadPid();
    for (let round = 0; round < 20; round++) {
      const stateDir = await tempRoot();
      await writeHolder(stateDir, dead);
      const { log } = recordingLog();
      const results = await Promise.allSettled([
        acquireLock(stateDir, { command: 'a', log }),
        acquireLock(stateDir, { command: 'b', log }),
        acquireLock(stateDir, { command: 'c', log }),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won, `round ${round}`).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(LockBusyError);
    }
  });

  it('a takeover left half done by a process that died (lock.break) does not block forever', async () => {
    const stateDir = await tempRoot();
    const dead = await deadPid();
    await writeHolder(stateDir, dead);
    await writeFile(
      `${lockPath(stateDir)}.break`,
      JSON.stringify({ pid: dead, command: 'watch', token: 'e'.repeat(16), host: hostname(), startedAt: '' }),
    );
    const { log } = recordingLog();
    const lock = await acquireLock(stateDir, { command: 'compile', log });
    expect(await readdir(stateDir)).toEqual(['lock']);
    await lock.release();
  });

  it('release removes the lock and leaves no temp files behind', async () => {
    const stateDir = await tempRoot();
    const { log } = recordingLog();
    const lock = await acquireLock(stateDir, { command: 'compile', log });
    await lock.release();
    expect(await readdir(stateDir)).toEqual([]);
    await lock.release(); // twice is harmless
  });
});
