/**
 * A local HTTP server that plays the GitHub REST endpoints corral uses, as GitHub documents them:
 * generate-jitconfig (201 / 409 / 422), the runners list (`{total_count, runners}` with `Link`
 * pagination, `?name=` filter), delete (204 / 404), and an App installation token (RS256 JWT
 * checked). Faults can be injected: a JSON 503, an HTML 502 page, a 401, a 403 with rate-limit
 * headers, a 429 with retry-after, and a request that never answers.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createVerify } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export interface FakeRunner {
  id: number;
  name: string;
  os: string;
  status: 'online' | 'offline';
  busy: boolean;
  labels: { id: number; name: string; type: 'read-only' | 'custom' }[];
  runner_group_id: number;
  /** Scope key: `repos/o/r` or `orgs/o`. */
  scope: string;
}

export type Fault = '503' | 'html502' | '401' | 'ratelimit403' | '429' | 'hang';

export interface Issued {
  /** performance.now() when the registration was made. */
  at: number;
  name: string;
  encodedJitConfig: string;
  labels: string[];
  runnerGroupId: number;
}

export interface FakeGitHub {
  url: string;
  runners: Map<number, FakeRunner>;
  issued: Issued[];
  requests: { method: string; path: string; authorization?: string; accept?: string }[];
  /** The next `times` requests (matching `when`, if given) get this fault. */
  fail(fault: Fault, times?: number, when?: (method: string, path: string) => boolean): void;
  /** Every request gets this fault until cleared with `down(undefined)`. */
  down(fault: Fault | undefined): void;
  /** Adds a registration as if another process had made it. */
  addRunner(scope: string, name: string): FakeRunner;
  /** Seconds until the rate limit resets, sent with ratelimit403. */
  rateLimitResetIn: number;
  /** App auth: the PEM public key whose private key signs the JWTs, and the installation token issued. */
  app?: { appId: number; installationId: number; publicKeyPem: string };
  close(): Promise<void>;
}

const TOKEN = 'test-token-0123456789';
export const FAKE_GITHUB_TOKEN = TOKEN;
const INSTALLATION_TOKEN = 'ghs_installation_token_abcdef';

export async function startFakeGitHub(opts: { app?: FakeGitHub['app'] } = {}): Promise<FakeGitHub> {
  let nextId = 1;
  const faults: { fault: Fault; remaining: number; when?: (m: string, p: string) => boolean }[] = [];
  let downFault: Fault | undefined;
  const hanging = new Set<ServerResponse>();
  const state: FakeGitHub = {
    url: '',
    runners: new Map(),
    issued: [],
    requests: [],
    rateLimitResetIn: 120,
    ...(opts.app ? { app: opts.app } : {}),
    fail(fault, times = 1, when) {
      faults.push({ fault, remaining: times, ...(when ? { when } : {}) });
    },
    down(fault) {
      downFault = fault;
    },
    addRunner(scope, name) {
      const runner = newRunner(scope, name, ['self-hosted'], 1);
      state.runners.set(runner.id, runner);
      return runner;
    },
    close: async () => {
      for (const res of hanging) res.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  function newRunner(scope: string, name: string, labels: string[], group: number): FakeRunner {
    const id = nextId++;
    return {
      id,
      name,
      os: 'unknown',
      status: 'offline',
      busy: false,
      labels: labels.map((l, i) => ({
        id: i + 1,
        name: l,
        type: l === 'self-hosted' || /^(X64|ARM64|Linux)$/.test(l) ? 'read-only' : 'custom',
      })),
      runner_group_id: group,
      scope,
    };
  }

  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
    res.end(JSON.stringify(body));
  };
  const docs = 'https://docs.github.com/rest/actions/self-hosted-runners';

  function injected(res: ServerResponse, fault: Fault): void {
    switch (fault) {
      case '503':
        return json(res, 503, { message: 'Service Unavailable' });
      case 'html502':
        res.writeHead(502, { 'content-type': 'text/html; charset=utf-8' });
        return void res.end(
          '<!DOCTYPE html>\n<html><head><title>Unicorn! · GitHub</title></head><body>502</body></html>',
        );
      case '401':
        return json(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });
      case 'ratelimit403': {
        const reset = Math.floor(Date.now() / 1000) + state.rateLimitResetIn;
        return json(
          res,
          403,
          { message: 'API rate limit exceeded for installation ID 1.', documentation_url: docs },
          {
            'x-ratelimit-limit': '5000',
            'x-ratelimit-remaining': '0',
            'x-ratelimit-used': '5000',
            'x-ratelimit-reset': String(reset),
            'x-ratelimit-resource': 'core',
          },
        );
      }
      case '429':
        return json(
          res,
          429,
          { message: 'You have exceeded a secondary rate limit. Please wait a few minutes before you try again.' },
          { 'retry-after': String(state.rateLimitResetIn) },
        );
      case 'hang':
        hanging.add(res);
        res.on('close', () => hanging.delete(res));
        return;
    }
  }

  async function body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    if (!text) return {};
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  }

  function verifyJwt(jwt: string): boolean {
    const app = state.app;
    if (!app) return false;
    const [h, p, s] = jwt.split('.');
    if (!h || !p || !s) return false;
    const ok = createVerify('RSA-SHA256').update(`${h}.${p}`).verify(app.publicKeyPem, Buffer.from(s, 'base64url'));
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as { iss?: unknown; exp?: number };
    return ok && String(claims.iss) === String(app.appId) && (claims.exp ?? 0) * 1000 > Date.now();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', state.url);
    const method = req.method ?? 'GET';
    const path = url.pathname;
    state.requests.push({
      method,
      path: `${path}${url.search}`,
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      ...(req.headers.accept ? { accept: req.headers.accept } : {}),
    });
    if (downFault) return injected(res, downFault);
    const f = faults.find((x) => x.remaining > 0 && (!x.when || x.when(method, path)));
    if (f) {
      f.remaining--;
      return injected(res, f.fault);
    }
    const auth = req.headers.authorization ?? '';
    const appToken = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(path);
    if (appToken && method === 'POST') {
      const jwt = auth.replace(/^bearer /i, '');
      if (!verifyJwt(jwt) || Number(appToken[1]) !== state.app?.installationId)
        return json(res, 401, { message: 'A JSON web token could not be decoded', documentation_url: docs });
      return json(res, 201, {
        token: INSTALLATION_TOKEN,
        expires_at: new Date(Date.now() + 3600_000).toISOString(),
        permissions: { administration: 'write', organization_self_hosted_runners: 'write' },
        repository_selection: 'all',
      });
    }
    const goodToken = state.app ? INSTALLATION_TOKEN : TOKEN;
    if (!new RegExp(`^(token|bearer) ${goodToken}$`, 'i').test(auth))
      return json(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' });

    const m = /^\/(repos\/[^/]+\/[^/]+|orgs\/[^/]+)\/actions\/runners(?:\/(generate-jitconfig|\d+))?$/.exec(path);
    if (!m) return json(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
    const scope = m[1] as string;
    const sub = m[2];
    if (sub === 'generate-jitconfig' && method === 'POST') {
      const b = (await body(req)) as { name?: unknown; runner_group_id?: unknown; labels?: unknown } | undefined;
      if (!b) return json(res, 400, { message: 'Problems parsing JSON', documentation_url: docs });
      const invalid = (message: string) => json(res, 422, { message, documentation_url: docs });
      if (typeof b.name !== 'string' || b.name === '') return invalid('Invalid request.\n\n"name" wasn\'t supplied.');
      if (!Number.isInteger(b.runner_group_id))
        return invalid('Invalid request.\n\n"runner_group_id" wasn\'t supplied.');
      if (
        !Array.isArray(b.labels) ||
        b.labels.length < 1 ||
        b.labels.length > 100 ||
        !b.labels.every((l) => typeof l === 'string')
      )
        return invalid('Invalid request.\n\n"labels" must have between 1 and 100 items.');
      if (b.runner_group_id !== 1) return json(res, 404, { message: 'Not Found', documentation_url: docs });
      if ([...state.runners.values()].some((r) => r.scope === scope && r.name === b.name))
        return json(res, 409, {
          message: `Already exists - A runner with the name ${b.name} already exists.`,
          documentation_url: docs,
        });
      const runner = newRunner(scope, b.name, b.labels as string[], b.runner_group_id as number);
      state.runners.set(runner.id, runner);
      const files = {
        '.runner': Buffer.from(JSON.stringify({ agentId: runner.id, agentName: runner.name })).toString('base64'),
        '.credentials': Buffer.from(JSON.stringify({ scheme: 'OAuth', data: { clientId: `c-${runner.id}` } })).toString(
          'base64',
        ),
        '.credentials_rsaparams': Buffer.from(`rsa-${runner.id}-${Math.random()}`).toString('base64'),
      };
      const encoded = Buffer.from(JSON.stringify(files)).toString('base64');
      state.issued.push({
        at: performance.now(),
        name: runner.name,
        encodedJitConfig: encoded,
        labels: b.labels as string[],
        runnerGroupId: runner.runner_group_id,
      });
      const { scope: _scope, runner_group_id: _group, ...public_ } = runner;
      return json(res, 201, { runner: public_, encoded_jit_config: encoded });
    }
    if (sub === undefined && method === 'GET') {
      const perPage = Math.min(100, Number(url.searchParams.get('per_page') ?? 30) || 30);
      const page = Math.max(1, Number(url.searchParams.get('page') ?? 1) || 1);
      const name = url.searchParams.get('name');
      const all = [...state.runners.values()].filter((r) => r.scope === scope && (name === null || r.name === name));
      const slice = all.slice((page - 1) * perPage, page * perPage);
      const last = Math.max(1, Math.ceil(all.length / perPage));
      const link = (p: number) => {
        const u = new URL(url);
        u.searchParams.set('page', String(p));
        u.searchParams.set('per_page', String(perPage));
        return u.toString();
      };
      const rels: string[] = [];
      if (page < last) rels.push(`<${link(page + 1)}>; rel="next"`, `<${link(last)}>; rel="last"`);
      if (page > 1) rels.push(`<${link(1)}>; rel="first"`, `<${link(page - 1)}>; rel="prev"`);
      return json(
        res,
        200,
        { total_count: all.length, runners: slice.map(({ scope: _s, runner_group_id: _g, ...r }) => r) },
        rels.length ? { link: rels.join(', ') } : {},
      );
    }
    if (sub !== undefined && /^\d+$/.test(sub) && method === 'DELETE') {
      const runner = state.runners.get(Number(sub));
      if (!runner || runner.scope !== scope) return json(res, 404, { message: 'Not Found', documentation_url: docs });
      state.runners.delete(runner.id);
      res.writeHead(204);
      return void res.end();
    }
    if (sub !== undefined && /^\d+$/.test(sub) && method === 'GET') {
      const runner = state.runners.get(Number(sub));
      if (!runner || runner.scope !== scope) return json(res, 404, { message: 'Not Found', documentation_url: docs });
      const { scope: _s, runner_group_id: _g, ...r } = runner;
      return json(res, 200, r);
    }
    return json(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => json(res, 500, { message: String(error) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}
