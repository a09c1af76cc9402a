/**
 * A client of the OCI distribution API over Node's fetch: manifests, blob existence, monolithic
 * and chunked uploads, cross-repository mounts and downloads that resume with HTTP Range after a
 * dropped connection. Network failures and 5xx/429 answers are retried with back-off, then become
 * TransientErrors; refusals become ConfigErrors that say what to do.
 */
import { createHash } from 'node:crypto';
import { ConfigError, TransientError } from '../errors.js';
import { RegistryAuth } from './auth.js';
import { sha256Digest } from './digest.js';
import type { CredentialStore } from './credentials.js';
import { DIGEST, registryBaseUrl } from './reference.js';

export const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

export interface ClientOptions {
  credentials: CredentialStore;
  fetch?: typeof fetch;
  /** Attempts after the first for a failed request (default 4). */
  retries?: number;
  /** First back-off delay; doubles each attempt (default 500 ms). */
  retryDelayMs?: number;
}

interface RequestInit {
  method: string;
  /** Absolute URL, or a path under the registry. */
  url: string;
  scopes: string[];
  headers?: Record<string, string>;
  body?: Buffer;
  /** Statuses returned to the caller instead of raised. */
  ok: number[];
}

export interface Manifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
}

const pull = (repo: string) => `repository:${repo}:pull`;
const push = (repo: string) => `repository:${repo}:pull,push`;

export class RegistryClient {
  readonly base: string;
  private readonly auth: RegistryAuth;
  private readonly fetchImpl: typeof fetch;
  private readonly retries: number;
  private readonly retryDelayMs: number;

  constructor(
    readonly registry: string,
    opts: ClientOptions,
  ) {
    this.base = registryBaseUrl(registry);
    this.fetchImpl = opts.fetch ?? fetch;
    this.auth = new RegistryAuth(registry, opts.credentials, this.fetchImpl);
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
  }

  /** `GET /v2/`: checks the registry answers and the credentials (if any) are accepted. */
  async ping(): Promise<void> {
    await this.request({ method: 'GET', url: '/v2/', scopes: [], ok: [200] });
  }

  /** The digest a tag (or digest) points at, from a HEAD: resolving never downloads the image. */
  async resolve(repo: string, reference: string): Promise<string | undefined> {
    const res = await this.request({
      method: 'HEAD',
      url: `/v2/${repo}/manifests/${reference}`,
      scopes: [pull(repo)],
      headers: { accept: MANIFEST_TYPES.join(', ') },
      ok: [200, 404],
    });
    if (res.status === 404) return undefined;
    const digest = res.headers.get('docker-content-digest');
    if (digest && DIGEST.test(digest)) return digest;
    return (await this.getManifest(repo, reference))?.digest;
  }

  async getManifest(repo: string, reference: string): Promise<Manifest | undefined> {
    const res = await this.request({
      method: 'GET',
      url: `/v2/${repo}/manifests/${reference}`,
      scopes: [pull(repo)],
      headers: { accept: MANIFEST_TYPES.join(', ') },
      ok: [200, 404],
    });
    if (res.status === 404) return undefined;
    const bytes = Buffer.from(await res.arrayBuffer());
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference)
      throw new TransientError(
        `manifest ${repo}@${reference} from ${this.registry} failed verification: got ${digest}`,
      );
    return { digest, mediaType: res.headers.get('content-type') ?? '', bytes };
  }

  async putManifest(repo: string, reference: string, mediaType: string, bytes: Buffer): Promise<string> {
    const res = await this.request({
      method: 'PUT',
      url: `/v2/${repo}/manifests/${reference}`,
      scopes: [push(repo)],
      headers: { 'content-type': mediaType },
      body: bytes,
      ok: [201, 200],
    });
    await res.arrayBuffer();
    return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  }

  async hasBlob(repo: string, digest: string): Promise<boolean> {
    const res = await this.request({
      method: 'HEAD',
      url: `/v2/${repo}/blobs/${digest}`,
      scopes: [pull(repo)],
      ok: [200, 404],
    });
    return res.status === 200;
  }

  /** Asks the registry to link a blob from another repository; false when it would rather have an upload. */
  async mountBlob(repo: string, digest: string, from: string): Promise<boolean> {
    const q = new URLSearchParams({ mount: digest, from });
    const res = await this.request({
      method: 'POST',
      url: `/v2/${repo}/blobs/uploads/?${q}`,
      scopes: [push(repo), pull(from)],
      headers: { 'content-length': '0' },
      ok: [201, 202],
    });
    await res.arrayBuffer();
    if (res.status === 201) return true;
    // It opened an upload session instead; close it rather than leave it to expire.
    const location = res.headers.get('location');
    if (location)
      await this.request({ method: 'DELETE', url: location, scopes: [push(repo)], ok: [204, 200, 404] })
        .then((r) => r.arrayBuffer())
        .catch(() => undefined);
    return false;
  }

  /**
   * Uploads a blob: one PUT when `chunkBytes` is 0 or the blob fits in it, else PATCHes of
   * `chunkBytes` with Content-Range and a closing PUT (for registries that cap request sizes).
   */
  async uploadBlob(repo: string, digest: string, data: Buffer, chunkBytes = 0): Promise<void> {
    const scopes = [push(repo)];
    const start = await this.request({
      method: 'POST',
      url: `/v2/${repo}/blobs/uploads/`,
      scopes,
      headers: { 'content-length': '0' },
      ok: [202],
    });
    await start.arrayBuffer();
    let location = this.location(start);
    if (chunkBytes > 0 && data.length > chunkBytes) {
      for (let at = 0; at < data.length; at += chunkBytes) {
        const piece = data.subarray(at, Math.min(at + chunkBytes, data.length));
        const res = await this.request({
          method: 'PATCH',
          url: location,
          scopes,
          headers: {
            'content-type': 'application/octet-stream',
            'content-range': `${at}-${at + piece.length - 1}`,
          },
          body: piece,
          ok: [202],
        });
        await res.arrayBuffer();
        location = this.location(res);
      }
      data = Buffer.alloc(0);
    }
    const done = await this.request({
      method: 'PUT',
      url: withQuery(location, 'digest', digest),
      scopes,
      headers: { 'content-type': 'application/octet-stream' },
      body: data,
      ok: [201, 204],
    });
    await done.arrayBuffer();
  }

  /**
   * Downloads a blob of known size into memory. A connection that drops midway is picked up with
   * `Range: bytes=<received>-`, so a retry costs only what was missing. Verifies the digest.
   */
  async getBlob(repo: string, digest: string, size: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.request({
          method: 'GET',
          url: `/v2/${repo}/blobs/${digest}`,
          scopes: [pull(repo)],
          headers: got > 0 ? { range: `bytes=${got}-` } : {},
          ok: [200, 206],
        });
        if (res.status === 200) got = 0; // the registry ignored Range: start over
        if (!res.body) throw new Error('empty response body');
        for await (const part of res.body as AsyncIterable<Uint8Array>) {
          if (got + part.length > size)
            throw new TransientError(
              `blob ${digest} from ${this.registry} is larger than its descriptor says (${size})`,
            );
          buf.set(part, got);
          got += part.length;
        }
        if (got !== size) throw new Error(`connection closed after ${got} of ${size} bytes`);
        break;
      } catch (err) {
        if (
          err instanceof ConfigError ||
          (err instanceof TransientError && !isNetwork(err.cause)) ||
          attempt >= this.retries
        )
          throw wrapNetwork(err, `downloading ${digest} from ${this.registry}`);
        await sleep(this.retryDelayMs * 2 ** attempt);
      }
    }
    const actual = await sha256Digest(buf);
    if (actual !== digest)
      throw new TransientError(
        `blob ${digest} from ${this.registry}/${repo} failed verification: its content hashes to ${actual}`,
      );
    return buf;
  }

  private location(res: Response): string {
    const loc = res.headers.get('location');
    if (!loc) throw new TransientError(`registry ${this.registry} opened an upload without a Location`);
    return loc;
  }

  /** One request with auth and retries; statuses outside `ok` become errors. */
  private async request(init: RequestInit): Promise<Response> {
    const url = new URL(init.url, this.base).toString();
    let answeredChallenge = false;
    for (let attempt = 0; ;) {
      const authorization = await this.auth.header(init.scopes);
      let res: Response;
      try {
        res = await this.fetchImpl(url, {
          method: init.method,
          headers: { ...init.headers, ...(authorization ? { authorization } : {}) },
          ...(init.body ? { body: init.body } : {}),
          redirect: 'follow',
        });
      } catch (err) {
        if (attempt++ >= this.retries) throw wrapNetwork(err, `${init.method} ${url}`);
        await sleep(this.retryDelayMs * 2 ** (attempt - 1));
        continue;
      }
      if (init.ok.includes(res.status)) return res;
      if (res.status === 401 && !answeredChallenge) {
        await res.arrayBuffer().catch(() => undefined);
        answeredChallenge = true;
        if (await this.auth.unauthorized(res, init.scopes, authorization)) continue;
        throw new ConfigError(await this.auth.describeRefusal());
      }
      const text = await res.text().catch(() => '');
      if ((res.status >= 500 || res.status === 429) && attempt++ < this.retries) {
        await sleep(this.retryDelayMs * 2 ** (attempt - 1));
        continue;
      }
      const detail = registryErrors(text);
      const what = `${init.method} ${new URL(url).pathname}`;
      if (res.status === 401 || res.status === 403)
        throw new ConfigError(`${await this.auth.describeRefusal()} (${what}: ${res.status}${detail})`);
      if (res.status >= 500 || res.status === 429)
        throw new TransientError(`registry ${this.registry} answered ${res.status} to ${what}${detail}`);
      throw new ConfigError(`registry ${this.registry} answered ${res.status} to ${what}${detail}`);
    }
  }
}

/** The `errors[].message` of a registry's JSON error body, for the operator. */
function registryErrors(text: string): string {
  try {
    const body = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    const msgs = (body.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': '));
    return msgs.length > 0 ? ` (${msgs.join('; ')})` : '';
  } catch {
    return text ? ` (${text.slice(0, 200).trim()})` : '';
  }
}

function isNetwork(err: unknown): boolean {
  return err instanceof TypeError || (err instanceof Error && 'code' in err);
}

function wrapNetwork(err: unknown, what: string): Error {
  if (err instanceof ConfigError || err instanceof TransientError) return err;
  const cause = (err as Error & { cause?: Error }).cause;
  return new TransientError(`${what}: ${(err as Error).message}${cause?.message ? ` (${cause.message})` : ''}`, {
    cause: err,
  });
}

function withQuery(url: string, key: string, value: string): string {
  return `${url}${url.includes('?') ? '&' : '?'}${key}=${encodeURIComponent(value)}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
