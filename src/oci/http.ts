/**
 * HTTP for the registry client over node:http/https with keep-alive agents. Not `fetch`: undici's
 * fetch copies every request body it is given (`extractBody`) and every response chunk it hands
 * out (web streams), which cost a 1 GiB push or pull about a second of CPU on the 2-core machine
 * (docs/oci-format.md, *Performance*). Here a Buffer body is written to the socket as it is, and a
 * response body is a Node stream whose chunks the caller copies once, into the blob's buffer.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';

export interface HttpRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

export interface HttpResponse {
  status: number;
  /** The URL that answered (after redirects). */
  url: string;
  header(name: string): string | null;
  /** The body, unread. Read it, or call drain(), so the connection can be reused. */
  body: IncomingMessage;
  bytes(): Promise<Buffer>;
  text(): Promise<string>;
  drain(): Promise<void>;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/** A connection silent this long is given up (and the request retried by the client), as fetch's 300 s timeouts did. */
const IDLE_TIMEOUT_MS = 120_000;
const MAX_REDIRECTS = 5;

export class HttpTransport {
  private readonly agents = {
    'http:': new http.Agent({ keepAlive: true, maxSockets: 16 }),
    'https:': new https.Agent({ keepAlive: true, maxSockets: 16 }),
  };

  /**
   * One request. GET and HEAD follow redirects (registries send blob downloads to their storage),
   * dropping the Authorization header when the redirect leaves the registry's origin.
   */
  async request(req: HttpRequest): Promise<HttpResponse> {
    let url = new URL(req.url);
    let headers = { ...req.headers };
    const origin = url.origin;
    for (let hops = 0; ; hops++) {
      const res = await this.once(url, req.method, headers, req.body);
      const location = res.headers.location;
      if (!REDIRECTS.has(res.statusCode ?? 0) || !location || (req.method !== 'GET' && req.method !== 'HEAD'))
        return wrap(res, url.toString());
      res.resume();
      if (hops >= MAX_REDIRECTS) throw new Error(`${req.method} ${req.url}: more than ${MAX_REDIRECTS} redirects`);
      url = new URL(location, url);
      if (url.origin !== origin) {
        headers = { ...headers };
        delete headers['authorization'];
      }
    }
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.agents['http:'].destroy();
    this.agents['https:'].destroy();
  }

  private once(
    url: URL,
    method: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
  ): Promise<IncomingMessage> {
    const lib = url.protocol === 'https:' ? https : http;
    const agent = url.protocol === 'https:' ? this.agents['https:'] : this.agents['http:'];
    return new Promise((resolve, reject) => {
      const req = lib.request(
        url,
        {
          method,
          agent,
          headers: {
            ...headers,
            ...(body || method === 'PUT' || method === 'POST' || method === 'PATCH'
              ? { 'content-length': String(body?.length ?? 0) }
              : {}),
          },
        },
        resolve,
      );
      req.on('error', reject);
      req.setTimeout(IDLE_TIMEOUT_MS, () =>
        req.destroy(
          Object.assign(new Error(`no answer from ${url.host} for ${IDLE_TIMEOUT_MS / 1000} s`), { code: 'ETIMEDOUT' }),
        ),
      );
      req.end(body);
    });
  }
}

function wrap(res: IncomingMessage, url: string): HttpResponse {
  const bytes = async () => {
    const parts: Buffer[] = [];
    for await (const part of res) parts.push(part as Buffer);
    return Buffer.concat(parts);
  };
  return {
    status: res.statusCode ?? 0,
    url,
    header: (name) => headerValue(res.headers, name),
    body: res,
    bytes,
    text: async () => (await bytes()).toString('utf8'),
    drain: () =>
      new Promise((resolve) => {
        if (res.readableEnded) return resolve();
        res
          .once('end', resolve)
          .once('error', () => resolve())
          .once('close', resolve);
        res.resume();
      }),
  };
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | null {
  const v = headers[name.toLowerCase()];
  if (v === undefined) return null;
  return Array.isArray(v) ? v.join(', ') : v;
}
