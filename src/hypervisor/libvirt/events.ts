/**
 * Guest lifecycle events from libvirt: one long-lived `virsh event --all --loop --timestamp`
 * process per watch, its lines parsed as they come (docs/design.md, "Events and requeue").
 * When libvirtd goes away, virsh exits; the stream says so once in the log, lets the resync timer
 * carry on alone, and reconnects with back-off. When it is up again the sink hears `onResumed`,
 * because events may have been lost meanwhile.
 *
 * Why virsh and not a binding: the one Node binding of libvirt's event API is a native addon with
 * a few hundred downloads a month that needs libvirt's headers and a compiler at install; virsh is
 * already the way corral talks to libvirt and costs one process for the life of the watch
 * (`npm run bench events` measures the whole event path).
 */
import { createInterface } from 'node:readline';
import { execa, type ResultPromise } from 'execa';
import type { Logger } from 'pino';
import type { GuestEvent, GuestEventKind, GuestEventSink, GuestEventStream } from '../hypervisor.js';

export interface EventStreamOptions {
  uri: string;
  log: Logger;
  /** The stream counts as up once virsh has run this long without exiting. */
  healthyAfterMs?: number;
  /** Reconnect back-off. */
  retry?: { firstMs: number; maxMs: number };
}

const LINE =
  /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}(?:\.\d+)?)([+-]\d{2})(\d{2}): event '([^']+)' for domain '(.*)': (\S+)(?: (.*))?$/;

/** One line of `virsh event --timestamp` output; undefined for lines and events that do not concern a guest's lifecycle. */
export function parseEventLine(line: string): GuestEvent | undefined {
  const m = LINE.exec(line.trim());
  if (!m) return undefined;
  const [, date, time, tzH, tzM, type, guest, event, detail = ''] = m as unknown as string[];
  if (type !== 'lifecycle') return undefined;
  const kind = lifecycleKind(event as string, detail);
  if (!kind) return undefined;
  const stamp = new Date(`${date}T${time}${tzH}:${tzM}`);
  return {
    guest: guest as string,
    kind,
    detail: detail || (event as string),
    time: Number.isNaN(stamp.getTime()) ? new Date().toISOString() : stamp.toISOString(),
  };
}

/** libvirt's virDomainEventType words, as virsh prints them. Suspend/resume and "Shutdown" (a Stopped follows) say nothing new. */
function lifecycleKind(event: string, detail: string): GuestEventKind | undefined {
  switch (event) {
    case 'Defined':
      return detail === 'Renamed' ? 'renamed' : 'defined';
    case 'Undefined':
      return detail === 'Renamed' ? 'renamed' : 'undefined';
    case 'Started':
      return 'started';
    case 'Stopped':
      return detail === 'Crashed' || detail === 'Failed' ? 'crashed' : 'stopped';
    case 'Crashed':
      return 'crashed';
    default:
      return undefined;
  }
}

export class VirshEventStream implements GuestEventStream {
  private child: ResultPromise | undefined;
  private closed = false;
  /** True while virsh is connected; false from the first failure until a connection lasts again. */
  private up = false;
  /** An outage (or a start that never connected) is logged once, not at every reconnect attempt. */
  private outageLogged = false;
  private retryMs: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: EventStreamOptions,
    private readonly sink: GuestEventSink,
  ) {
    this.retryMs = this.retry.firstMs;
    this.connect();
  }

  private get retry(): { firstMs: number; maxMs: number } {
    return this.opts.retry ?? { firstMs: 250, maxMs: 30_000 };
  }

  private connect(): void {
    if (this.closed) return;
    const child = execa('virsh', ['-q', '-c', this.opts.uri, 'event', '--all', '--loop', '--timestamp'], {
      buffer: false,
      stdin: 'ignore',
      stderr: 'pipe',
      env: { LC_ALL: 'C' },
      reject: false,
    });
    this.child = child;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-2000)));
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const event = parseEventLine(line);
      if (event) this.sink.onEvent(event);
    });
    const healthy = setTimeout(() => this.connected(), this.opts.healthyAfterMs ?? 1000);
    void child.then((result) => {
      clearTimeout(healthy);
      lines.close();
      if (this.closed) return;
      const why =
        stderr.trim().split('\n').filter(Boolean).pop() ?? `virsh event exited (${result.exitCode ?? result.signal})`;
      this.lost(why);
    });
  }

  private connected(): void {
    if (this.closed) return;
    const wasDown = this.outageLogged;
    this.up = true;
    this.outageLogged = false;
    this.retryMs = this.retry.firstMs;
    if (wasDown) {
      this.opts.log.info('guest event stream is back; events trigger passes again');
      this.sink.onResumed?.();
    } else this.opts.log.debug('guest event stream connected');
  }

  private lost(why: string): void {
    this.up = false;
    if (!this.outageLogged) {
      this.outageLogged = true;
      this.opts.log.warn(
        { error: why, retryInMs: this.retryMs },
        'guest event stream lost; falling back to the resync timer alone until it reconnects',
      );
    }
    this.timer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, this.retry.maxMs);
  }

  get connectedNow(): boolean {
    return this.up;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const child = this.child;
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await child.catch(() => undefined);
    }
  }
}
