/**
 * Reading what guests say, in a way that survives stock libvirt (DESIGN in docs/guests.md).
 *
 * A guest's status channel (virtio-serial `org.corral.status`) and serial console are unix
 * sockets that libvirt creates and hands to QEMU (`<source mode='bind'>`), relabelled to corral's
 * own uid (`<seclabel model='dac'><label>+uid:+gid</label>`) and kept in a dir only corral can
 * enter. corral connects as the client and appends what arrives to *record files it writes
 * itself* (`status/<key>.status`, `logs/<key>.console.log`). So no file corral reads is ever
 * created or relabelled by virtlogd or libvirt's DAC driver, whatever qemu.conf says.
 *
 * Nothing is lost while corral is away on the status channel: a virtio-serial port whose host
 * side is not connected blocks the guest's write until corral connects. The serial console is a
 * UART and drops output nobody reads; it is complete while a `watch` (or the `reconcile --once`
 * waiting for its builds and runners) is attached.
 *
 * Only the state-dir lock holder attaches: a socket serves one client at a time.
 */
import { appendFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { HostError } from '../../errors.js';

interface Stream {
  socket: net.Socket;
  /** Appends are chained so the record keeps the order the bytes arrived in. */
  written: Promise<void>;
  closed: Promise<void>;
}

export interface ChannelPaths {
  statusSocket: string;
  status: string;
  consoleSocket: string;
  consoleLog: string;
}

export class ChannelPump {
  private readonly streams = new Map<string, Stream>();

  constructor(private readonly log: Logger) {}

  /**
   * Connects to a running guest's status and console sockets (those not connected yet). A socket
   * that is not there (the guest stopped meanwhile) is skipped; one corral may not open is a host
   * problem and throws a HostError naming it.
   */
  async attach(guest: string, paths: ChannelPaths): Promise<void> {
    await Promise.all([
      this.connect(`${guest}#status`, paths.statusSocket, paths.status),
      this.connect(`${guest}#console`, paths.consoleSocket, paths.consoleLog),
    ]);
  }

  /** Waits (at most `timeoutMs`) for a stopped guest's status stream to end and be written down. */
  async settle(guest: string, timeoutMs = 2000): Promise<void> {
    const keys = [`${guest}#status`, `${guest}#console`];
    const streams = keys.map((k) => this.streams.get(k)).filter((s): s is Stream => s !== undefined);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
    await Promise.race([Promise.all(streams.map((s) => s.closed)), timeout]);
    clearTimeout(timer);
    await Promise.all(streams.map((s) => s.written));
  }

  /** Waits until what has arrived so far is written down. */
  async flush(guest: string): Promise<void> {
    for (const key of [`${guest}#status`, `${guest}#console`]) await this.streams.get(key)?.written;
  }

  /** Stops reading a guest (before it is destroyed). */
  async detach(guest: string): Promise<void> {
    for (const key of [`${guest}#status`, `${guest}#console`]) {
      const s = this.streams.get(key);
      if (!s) continue;
      this.streams.delete(key);
      s.socket.destroy();
      await s.written;
    }
  }

  /** Stops reading every guest: the process gives up the state-dir lock, and the next holder reads them. */
  async detachAll(): Promise<void> {
    const guests = new Set([...this.streams.keys()].map((k) => k.slice(0, k.lastIndexOf('#'))));
    for (const guest of guests) await this.detach(guest);
  }

  attached(guest: string): boolean {
    return this.streams.has(`${guest}#status`);
  }

  private async connect(key: string, socketPath: string, record: string): Promise<void> {
    if (this.streams.has(key)) return;
    await mkdir(path.dirname(record), { recursive: true });
    const socket = net.createConnection({ path: socketPath });
    // Reading a guest never keeps the process alive.
    socket.unref();
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
    } catch (err) {
      socket.destroy();
      const e = err as NodeJS.ErrnoException;
      // Gone (the guest stopped) or not listening yet: nothing to read now; the next look retries.
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') return;
      throw hostErrorFor(e, socketPath, 'connect to');
    }
    let closedResolve!: () => void;
    const stream: Stream = {
      socket,
      written: Promise.resolve(),
      closed: new Promise<void>((r) => (closedResolve = r)),
    };
    this.streams.set(key, stream);
    socket.on('data', (chunk: Buffer) => {
      stream.written = stream.written.then(() =>
        appendFile(record, chunk, { mode: 0o600 }).catch((err: NodeJS.ErrnoException) => {
          this.log.error({ file: record, error: err.message }, 'cannot write what a guest said');
        }),
      );
    });
    socket.on('error', (err) => this.log.debug({ socket: socketPath, error: err.message }, 'guest channel error'));
    socket.on('close', () => {
      // A guest that stops closes its side; a restarted guest gets a fresh connection at the next look.
      if (this.streams.get(key) === stream) this.streams.delete(key);
      closedResolve();
    });
  }
}

/** An errno on a file corral needs, as the host problem it is (never as a guest's failure). */
export function hostErrorFor(err: NodeJS.ErrnoException, file: string, verb: string): Error {
  const code = err.code ?? 'error';
  const why =
    code === 'EACCES' || code === 'EPERM'
      ? `permission denied (${code}) for uid ${process.getuid?.() ?? '?'}`
      : `${err.message.replace(/^\w+: /, '')}`;
  return new HostError(`cannot ${verb} ${file}: ${why}`, { cause: err });
}
