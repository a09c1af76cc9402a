/**
 * A local HTTP server playing an upstream image host: it serves files (a base image, a
 * SHA256SUMS list) with Range support as RFC 9110 describes it, counts what it serves, can cut a
 * transfer midway, and can go down and come back on the same port.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ServedRequest {
  path: string;
  range?: string;
  status: number;
  bytes: number;
}

export class ImageServer {
  readonly files = new Map<string, Buffer>();
  readonly requests: ServedRequest[] = [];
  /** The next response to a path is cut after this many body bytes. */
  private readonly cuts = new Map<string, number>();
  private server: Server | undefined;
  private port = 0;

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Publishes a file, and (re)writes SHA256SUMS listing every image. */
  publish(name: string, bytes: Buffer): string {
    this.files.set(`/${name}`, bytes);
    const sums = [...this.files]
      .filter(([p]) => p !== '/SHA256SUMS')
      .map(([p, b]) => `${createHash('sha256').update(b).digest('hex')}  ${p.slice(1)}`)
      .join('\n');
    this.files.set('/SHA256SUMS', Buffer.from(`${sums}\n`));
    return createHash('sha256').update(bytes).digest('hex');
  }

  cutNext(path: string, afterBytes: number): void {
    this.cuts.set(path, afterBytes);
  }

  /** Full-body GETs of a path (a resumed transfer counts as partial). */
  downloads(path: string): ServedRequest[] {
    return this.requests.filter((r) => r.path === path);
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const body = this.files.get(path);
    const range = req.headers.range;
    const record = (status: number, bytes: number) =>
      this.requests.push({ path, status, bytes, ...(range ? { range } : {}) });
    if (!body) {
      record(404, 0);
      res.writeHead(404).end('not found');
      return;
    }
    let start = 0;
    let status = 200;
    const m = range ? /^bytes=(\d+)-$/.exec(range) : null;
    if (m) {
      start = Number(m[1]);
      if (start >= body.length) {
        record(416, 0);
        res.writeHead(416, { 'Content-Range': `bytes */${body.length}` }).end();
        return;
      }
      status = 206;
    }
    const part = body.subarray(start);
    const headers: Record<string, string> = { 'Content-Length': String(part.length), 'Accept-Ranges': 'bytes' };
    if (status === 206) headers['Content-Range'] = `bytes ${start}-${body.length - 1}/${body.length}`;
    res.writeHead(status, headers);
    const cut = this.cuts.get(path);
    if (cut !== undefined) {
      this.cuts.delete(path);
      record(status, cut);
      res.write(part.subarray(0, cut), () => res.socket?.destroy());
      return;
    }
    record(status, part.length);
    res.end(part);
  }
}
