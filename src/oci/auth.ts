/**
 * The distribution spec's auth dance: a 401 carries `WWW-Authenticate: Basic …` or
 * `Bearer realm=…,service=…,scope=…`; Basic is answered with the stored credentials, Bearer with
 * a token fetched from the realm (with those credentials when there are any, anonymously
 * otherwise). Tokens are cached per scope and fetched again when the registry answers 401.
 */
import { ConfigError, TransientError } from '../errors.js';
import type { CredentialStore, Credentials } from './credentials.js';

export interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  for (const p of (m[2] ?? '').matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g))
    params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  return { scheme, params };
}

function basic(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

export class RegistryAuth {
  private challenge: Challenge | undefined;
  private readonly tokens = new Map<string, string>();
  private creds: Promise<Credentials | undefined> | undefined;

  constructor(
    private readonly registry: string,
    private readonly store: CredentialStore,
    private readonly fetchImpl: typeof fetch,
  ) {}

  private credentials(): Promise<Credentials | undefined> {
    this.creds ??= this.store.get(this.registry);
    return this.creds;
  }

  /** The Authorization header to send for these scopes, if the registry asked for one already. */
  async header(scopes: string[]): Promise<string | undefined> {
    if (!this.challenge) return undefined;
    if (this.challenge.scheme === 'basic') {
      const c = await this.credentials();
      return c ? basic(c) : undefined;
    }
    const key = scopes.join(' ');
    const cached = this.tokens.get(key);
    if (cached) return `Bearer ${cached}`;
    const token = await this.fetchToken(this.challenge, scopes);
    this.tokens.set(key, token);
    return `Bearer ${token}`;
  }

  /**
   * Called on a 401: learns the challenge and forgets a token the registry no longer takes.
   * Returns false when answering again cannot help (no credentials for a Basic registry).
   */
  async unauthorized(res: Response, scopes: string[], sent: string | undefined): Promise<boolean> {
    const challenge = parseChallenge(res.headers.get('www-authenticate'));
    if (!challenge) return false;
    this.challenge = challenge;
    if (challenge.scheme === 'basic') return sent === undefined && (await this.credentials()) !== undefined;
    const key = scopes.join(' ');
    const had = this.tokens.get(key);
    this.tokens.delete(key);
    // Retry when we sent nothing or an older token: a fresh token is fetched on the way.
    return sent === undefined || sent === `Bearer ${had}`;
  }

  private async fetchToken(ch: Challenge, scopes: string[]): Promise<string> {
    const realm = ch.params['realm'];
    if (!realm) throw new ConfigError(`registry ${this.registry} asked for a bearer token without naming a realm`);
    const url = new URL(realm);
    if (ch.params['service']) url.searchParams.set('service', ch.params['service']);
    for (const s of scopes.length > 0 ? scopes : ch.params['scope'] ? [ch.params['scope']] : [])
      url.searchParams.append('scope', s);
    const c = await this.credentials();
    let res: Response;
    try {
      res = await this.fetchImpl(url, { headers: c ? { authorization: basic(c) } : {} });
    } catch (err) {
      throw new TransientError(
        `token server ${url.origin} for ${this.registry} unreachable: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    if (res.status === 401 || res.status === 403)
      throw new ConfigError(
        `registry ${this.registry} refused ${c ? `the credentials of "${c.username}"` : 'anonymous access'} (token server said ${res.status}); run "corral login ${this.registry}"`,
      );
    if (!res.ok) throw new TransientError(`token server ${url.origin} for ${this.registry} answered ${res.status}`);
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new TransientError(`token server ${url.origin} for ${this.registry} returned no token`);
    return token;
  }

  async describeRefusal(): Promise<string> {
    const c = await this.credentials();
    return c
      ? `registry ${this.registry} refused the credentials of "${c.username}"; run "corral login ${this.registry}"`
      : `registry ${this.registry} needs credentials; run "corral login ${this.registry}"`;
  }
}
