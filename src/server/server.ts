import { readdir, readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import type { Logger } from 'pino';
import type { HostConfig } from '../config/host-config.js';
import { LockBusyError } from '../errors.js';
import type { Hypervisor } from '../hypervisor/hypervisor.js';
import type { EventLog } from '../state/events.js';
import { packageRoot } from '../util/package-root.js';
import { apiRoutes } from './api.js';
import { LiveFeed } from './feed.js';
import { HttpError, sendError, sendText } from './http.js';
import { createMetrics } from './metrics.js';
import { readSnapshot, type ReadDeps, type Snapshot } from './read-model.js';
import type { PassTrigger } from './trigger.js';

export interface ServerDeps {
  config: HostConfig;
  log: Logger;
  events: EventLog;
  clock: () => Date;
  /** The hypervisor reads go to (see serve.ts: the writer's own, or a fresh read-only copy). */
  hypervisor(): Promise<Hypervisor>;
  /** Made once the feed exists, since a trigger publishes pass events into it and has it look before a pass. */
  trigger(feed: FeedPort): PassTrigger;
  /** Poll interval of the live feed. */
  pollMs: number;
  /** True when a `watch` runs in this process (its passes are reported directly, not read from watch-status.json). */
  inWatch: boolean;
  /** The sources compiled now, for before any pass stored a view. */
  preview?: ReadDeps['preview'];
  /** Where the dashboard's files are (default: web/ in the package). */
  webDir?: string;
}

/** What a trigger may do with the live feed: publish its passes, and have it look at the guests now. */
export interface FeedPort {
  publish: LiveFeed['publish'];
  look(): Promise<void>;
}

export interface RunningServer {
  url: string;
  feed: LiveFeed;
  close(): Promise<void>;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Snapshots asked for within this long of each other are shared (a page load makes several requests). */
const SNAPSHOT_TTL_MS = 250;

/** The composition root of `corral serve` and `watch --serve`: the feed, metrics, API and dashboard on one listener. */
export async function startServer(deps: ServerDeps): Promise<RunningServer> {
  const { config, log } = deps;
  const feed = new LiveFeed({
    events: deps.events,
    stateDir: config.stateDir,
    hypervisor: deps.hypervisor,
    clock: deps.clock,
    log,
    intervalMs: deps.pollMs,
    foreignPasses: !deps.inWatch,
  });
  const trigger = deps.trigger({ publish: (event) => feed.publish(event), look: () => feed.tick() });
  let cached: { at: number; value: Promise<Snapshot> } | undefined;
  const snapshot = (): Promise<Snapshot> => {
    const now = Date.now();
    if (!cached || now - cached.at > SNAPSHOT_TTL_MS) {
      const value = readSnapshot({
        config,
        hypervisor: deps.hypervisor,
        events: deps.events,
        clock: deps.clock,
        ...(deps.preview ? { preview: deps.preview } : {}),
      });
      value.catch(() => (cached = undefined));
      cached = { at: now, value };
    }
    return cached.value;
  };
  const metrics = createMetrics({ snapshot, now: deps.clock });
  feed.subscribe((event) => {
    metrics.onEvent(event);
    // An action or a pass changes what a snapshot shows: the next request computes a fresh one.
    if (event.type !== 'guest') cached = undefined;
  });
  const api = apiRoutes({
    config,
    log,
    snapshot,
    hypervisor: deps.hypervisor,
    feed,
    metrics,
    trigger,
    clock: deps.clock,
    followMs: Math.max(100, Math.min(deps.pollMs, 1000)),
  });
  const webDir = deps.webDir ?? join(packageRoot(), 'web');
  const assets = new Set(await readdir(webDir).catch(() => [] as string[]));

  const loopbackOnly = LOOPBACK.has(config.server.host);
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // Bound to loopback, only loopback names are served: a web page whose DNS name was rebound to
    // 127.0.0.1 cannot read the API through the visitor's browser.
    const hostname = (req.headers.host ?? '')
      .replace(/:\d+$/, '')
      .replace(/^\[(.*)\]$/, '$1')
      .toLowerCase();
    if (loopbackOnly && !LOOPBACK.has(hostname))
      throw new HttpError(
        421,
        'wrong-host',
        `this server answers to 127.0.0.1, [::1] and localhost, not "${hostname}"`,
      );
    const url = new URL(req.url ?? '/', 'http://corral.invalid');
    if (await api(req, res, url)) return;
    if (req.method !== 'GET' && req.method !== 'HEAD')
      throw new HttpError(405, 'method-not-allowed', `${req.method} is not allowed on ${url.pathname}`, {
        allow: 'GET',
      });
    if (url.pathname === '/metrics') return sendText(res, 200, await metrics.render(), metrics.contentType);
    // The dashboard: a fixed set of files, looked up by name, so no request can reach outside web/.
    const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
    if (!assets.has(name) || !TYPES[extname(name)])
      throw new HttpError(404, 'not-found', `no such page: ${url.pathname}`);
    const body = await readFile(join(webDir, name));
    res.writeHead(200, {
      'content-type': TYPES[extname(name)] as string,
      'content-length': String(body.length),
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (error instanceof HttpError) return sendError(res, error);
      if (error instanceof LockBusyError) return sendError(res, new HttpError(409, 'busy', error.message));
      log.error({ error: (error as Error).message, stack: (error as Error).stack, url: req.url }, 'request failed');
      sendError(res, new HttpError(500, 'internal', `internal error: ${(error as Error).message}`));
    });
  });
  // Malformed requests (bad headers, oversized header blocks) get a 400 and never reach a handler.
  server.on('clientError', (_error, socket) => {
    if (socket.writable)
      socket.end(
        'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"error":{"code":"bad-request","message":"malformed HTTP request"}}\n',
      );
    else socket.destroy();
  });
  // Receiving a request (headers and body) must not take long; responses (event streams, followed
  // logs) may stay open as long as the client wants.
  server.requestTimeout = 30_000;
  server.headersTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.server.port, config.server.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await feed.start();
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}/`;
  if (!loopbackOnly)
    log.warn(
      { listen: url },
      'listening beyond localhost: anyone who can reach it can read the API (mutations still need the token)',
    );
  log.info({ url, tokenFile: config.server.tokenFile ?? null }, 'corral console listening');
  return {
    url,
    feed,
    close: async () => {
      feed.stop();
      await trigger.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
