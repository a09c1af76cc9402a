import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireLock } from '../../src/state/lock.js';
import { cleanup } from '../builders/profile-dir.js';
import { eventually, readEvents, startServe, TOKEN, type Served } from './serve-harness.js';

interface Build {
  name: string;
  status: string;
  reason?: string;
  error?: string;
  template: string;
}
interface Profile {
  name: string;
  template: { name: string; gen: string; current: boolean } | null;
  runners: { desired: number; ready: number };
  building: Build | null;
  lastBuild: Build | null;
  pending: { reason: string; retryAt?: string }[];
}

const json = async <T>(res: Response): Promise<T> => (await res.json()) as T;

describe('corral serve: the JSON API against a real child process (memory backend)', () => {
  let served: Served;
  beforeAll(async () => {
    served = await startServe({ profiles: { web: 2, bad: 1 }, buildMs: 1500, outcomes: 'bad=fail' });
  });
  afterAll(async () => {
    expect(await served.stop()).toBe(0);
    await cleanup();
  });

  const profile = async (name: string) => json<Profile>(await served.get(`/api/v1/profiles/${name}`));

  it('lists its endpoints and shows the compiled profiles before any pass', async () => {
    const index = await json<{ endpoints: string[] }>(await served.get('/api/v1'));
    expect(index.endpoints).toContain('POST /api/v1/profiles/:name/rebuild');
    const status = await json<{ generation: number; profiles: Profile[] }>(await served.get('/api/v1/status'));
    expect(status.profiles.map((p) => p.name).sort()).toEqual(['bad', 'web']);
    expect(status.profiles.find((p) => p.name === 'web')).toMatchObject({ template: null, runners: { desired: 2 } });
  });

  it('refuses mutations without the right bearer token', async () => {
    const none = await served.post('/api/v1/reconcile', undefined, null);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await json(none)).toMatchObject({ error: { code: 'unauthorized' } });
    expect((await served.post('/api/v1/reconcile', undefined, 'wrong')).status).toBe(401);
    expect((await served.post('/api/v1/reconcile', undefined, `${TOKEN}x`)).status).toBe(401);
    expect((await served.post('/api/v1/profiles/web/rebuild', undefined, 'wrong')).status).toBe(401);
    // Nothing ran: still no template.
    expect((await profile('web')).template).toBeNull();
  });

  it('streams a pass, its actions and the guests it made over SSE; the build log follows a running build', async () => {
    const stream = await served.get('/api/v1/events', { headers: { accept: 'text/event-stream' } });
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events = readEvents(
      stream,
      (e) =>
        e.event === 'action' &&
        (e.data as Build & { action: string }).action === 'build' &&
        (e.data as { profile: string }).profile === 'web',
    );
    const accepted = await served.post('/api/v1/reconcile', '{}');
    expect(accepted.status).toBe(202);
    expect(await json(accepted)).toMatchObject({ accepted: true, via: 'this serve' });

    const running = await eventually(
      async () => (await profile('web')).building ?? undefined,
      10_000,
      'a running build',
    );
    expect(running.status).toBe('running');
    const log = await served.get(`/api/v1/builds/${encodeURIComponent(running.name)}/log?follow=1`);
    expect(log.status).toBe(200);
    // Followed while running, the response ends when the build does, with the verdict in it.
    expect(await log.text()).toMatch(/booting[\s\S]*ok/);

    const seen = await events;
    const kinds = seen.map((e) => e.event);
    expect(kinds[0]).toBe('hello');
    expect(seen).toContainEqual(
      expect.objectContaining({ event: 'pass', data: expect.objectContaining({ phase: 'done', by: 'serve' }) }),
    );
    expect(seen).toContainEqual(
      expect.objectContaining({ event: 'request', data: expect.objectContaining({ kind: 'reconcile' }) }),
    );
    expect(seen).toContainEqual(
      expect.objectContaining({
        event: 'guest',
        data: expect.objectContaining({ role: 'rebuild', change: 'appeared', state: 'running' }),
      }),
    );
    expect(seen.at(-1)?.data).toMatchObject({ type: 'action', action: 'build', ok: true, profile: 'web' });
  });

  it('shows profiles with desired and observed state, templates with manifests, runners, history and logs', async () => {
    const web = await eventually(
      async () => {
        const p = await profile('web');
        return p.runners.ready === 2 ? p : undefined;
      },
      10_000,
      'two ready runners',
    );
    expect(web).toMatchObject({
      template: { current: true },
      lastBuild: { status: 'succeeded', reason: 'no template yet' },
      pending: [],
    });

    const templates = await json<{ templates: { name: string; runners: string[] }[] }>(
      await served.get('/api/v1/templates'),
    );
    const template = templates.templates.find((t) => t.name === web.template?.name);
    expect(template?.runners.sort()).toEqual(['ci-runner-web.1', 'ci-runner-web.2']);
    const detail = await json<{
      manifest: { inputsHash: string; baseVersion: string; inputs: { path: string; sha256: string }[] };
    }>(await served.get(`/api/v1/templates/${encodeURIComponent(web.template!.name)}`));
    expect(detail.manifest.inputs.map((i) => i.path)).toEqual(['base.img', 'provision/provision.sh']);
    expect(detail.manifest.baseVersion).toMatch(/^sha256:[0-9a-f]{64}$/);

    const runners = await json<{ runners: { name: string; state: string; ci: null }[] }>(
      await served.get('/api/v1/runners'),
    );
    expect(runners.runners.filter((r) => r.name.startsWith('ci-runner-web.'))).toHaveLength(2);
    expect(await json(await served.get('/api/v1/runners/ci-runner-web.1'))).toMatchObject({
      state: 'running',
      ci: null,
      current: true,
    });
    expect(await (await served.get('/api/v1/runners/ci-runner-web.1/log')).text()).toContain('corral-runner');

    const builds = await json<{ builds: Build[] }>(await served.get('/api/v1/profiles/web/builds'));
    expect(builds.builds).toHaveLength(1);
    const build = await json<Build & { manifest: unknown }>(
      await served.get(`/api/v1/builds/${encodeURIComponent(builds.builds[0]!.name)}`),
    );
    expect(build).toMatchObject({ status: 'succeeded', manifest: { template: web.template!.name } });
    expect((await json<{ builds: Build[] }>(await served.get('/api/v1/builds'))).builds.length).toBeGreaterThanOrEqual(
      2,
    );
  });

  it('reports a failed build with its log and when it will be retried', async () => {
    const bad = await eventually(
      async () => {
        const p = await profile('bad');
        return p.lastBuild?.status === 'failed' ? p : undefined;
      },
      10_000,
      'the failed build',
    );
    expect(bad.lastBuild?.error).toMatch(/provision script exited/);
    expect(bad.pending).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ reason: expect.stringMatching(/backing off/), retryAt: expect.any(String) }),
      ]),
    );
    const log = await served.get(`/api/v1/builds/${encodeURIComponent(bad.lastBuild!.name)}/log`);
    expect(log.status).toBe(200);
    expect(await log.text()).toMatch(/failed: provision script exited/);
    expect(
      (await json<{ manifest: unknown }>(await served.get(`/api/v1/builds/${encodeURIComponent(bad.lastBuild!.name)}`)))
        .manifest,
    ).toBeNull();
  });

  it('rebuilds on request although the inputs did not change', async () => {
    const before = await profile('web');
    const res = await served.post('/api/v1/profiles/web/rebuild');
    expect(res.status).toBe(202);
    expect(await json(res)).toMatchObject({ accepted: true, profile: 'web' });
    const after = await eventually(
      async () => {
        const p = await profile('web');
        return p.template && p.template.name !== before.template?.name && p.runners.ready === 2 ? p : undefined;
      },
      15_000,
      'a new template with its runners',
    );
    expect(after.lastBuild).toMatchObject({
      status: 'succeeded',
      reason: expect.stringMatching(/^rebuild requested at /),
    });
    // Satisfied by that build: no further rebuild is pending.
    expect(after.building).toBeNull();
    expect(after.pending).toEqual([]);
  });

  it('answers bad input with a 4xx JSON error and keeps serving', async () => {
    const cases: [string, Promise<Response>, number, string][] = [
      ['unknown profile', served.get('/api/v1/profiles/nope'), 404, 'unknown-profile'],
      ['rebuild of an unknown profile', served.post('/api/v1/profiles/nope/rebuild'), 404, 'unknown-profile'],
      ['traversal in a profile name', served.get('/api/v1/profiles/..%2F..%2Fetc%2Fpasswd'), 400, 'invalid-name'],
      ['traversal in a rebuild', served.post('/api/v1/profiles/..%2Fweb/rebuild'), 400, 'invalid-name'],
      ['dot-dot as a name', served.get('/api/v1/builds/%2e%2e%2f%2e%2e/log'), 400, 'invalid-name'],
      ['bad percent-encoding', served.get('/api/v1/profiles/%E0%A4%A'), 400, 'invalid-name'],
      ['upper-case profile', served.get('/api/v1/profiles/WEB'), 400, 'invalid-name'],
      ['a runner name as a template', served.get('/api/v1/templates/ci-runner-web.1'), 400, 'invalid-name'],
      [
        'unknown template',
        served.get('/api/v1/templates/ci-template-web@20200101T000000Z-00000000'),
        404,
        'unknown-template',
      ],
      ['unknown build', served.get('/api/v1/builds/ci-rebuild-web@20200101T000000Z-00000000'), 404, 'unknown-build'],
      ['unknown runner log', served.get('/api/v1/runners/ci-runner-web.99/log'), 404, 'no-log'],
      ['malformed JSON', served.post('/api/v1/reconcile', '{"half":'), 400, 'malformed-json'],
      ['JSON that is not an object', served.post('/api/v1/reconcile', '[1,2]'), 400, 'invalid-body'],
      [
        'oversized body',
        served.post('/api/v1/reconcile', JSON.stringify({ x: 'y'.repeat(100_000) })),
        413,
        'body-too-large',
      ],
      ['unknown endpoint', served.get('/api/v1/nothing/here'), 404, 'not-found'],
      ['wrong method', served.get('/api/v1/reconcile'), 405, 'method-not-allowed'],
      ['traversal out of the dashboard', served.get('/..%2f..%2fpackage.json'), 404, 'not-found'],
      ['a file that is not the dashboard', served.get('/package.json'), 404, 'not-found'],
    ];
    for (const [what, pending, status, code] of cases) {
      const res = await pending;
      expect(res.status, what).toBe(status);
      expect(res.headers.get('content-type'), what).toMatch(/^application\/json/);
      expect(await json(res), what).toMatchObject({ error: { code, message: expect.any(String) } });
    }
    // A request cut off in the middle of its body does not take the server down either.
    await new Promise<void>((resolve) => {
      import('node:net').then(({ connect }) => {
        const { port, hostname } = new URL(served.url);
        const socket = connect(Number(port), hostname, () => {
          socket.write(
            `POST /api/v1/reconcile HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n{"a":`,
          );
          socket.destroy();
          resolve();
        });
      });
    });
    // A DNS name rebound to 127.0.0.1 does not get answers.
    const rebound = await new Promise<string>((resolve) => {
      import('node:net').then(({ connect }) => {
        const { port, hostname } = new URL(served.url);
        let reply = '';
        const socket = connect(Number(port), hostname, () =>
          socket.write('GET /api/v1/status HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n'),
        );
        socket.on('data', (d: Buffer) => (reply += d.toString()));
        socket.on('close', () => resolve(reply));
      });
    });
    expect(rebound).toMatch(/^HTTP\/1\.1 421 [\s\S]*"wrong-host"/);
    const viaLocalhost = await fetch(served.url.replace('127.0.0.1', 'localhost') + '/api/v1/status');
    expect(viaLocalhost.status).toBe(200);
    const page = await served.get('/');
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await page.text()).toContain('<script type="module" src="/app.js">');
    expect(served.child.exitCode).toBeNull();
  });
});

describe('corral serve without a token file', () => {
  it('is read-only: every mutation is a 403', async () => {
    const served = await startServe({ tokenFile: false });
    try {
      const res = await served.post('/api/v1/reconcile');
      expect(res.status).toBe(403);
      expect(await json(res)).toMatchObject({ error: { code: 'mutations-disabled' } });
      expect((await served.get('/api/v1/status')).status).toBe(200);
    } finally {
      expect(await served.stop()).toBe(0);
      await cleanup();
    }
  });
});

describe('corral serve while another run holds the lock', () => {
  it('answers 409 busy for a pass, but records a rebuild request for the holder to pick up', async () => {
    const served = await startServe();
    const lock = await acquireLock(served.stateDir, { command: 'reconcile --once', log: pino({ level: 'silent' }) });
    try {
      const res = await served.post('/api/v1/reconcile');
      expect(res.status).toBe(409);
      expect(await json(res)).toMatchObject({
        error: { code: 'busy', message: expect.stringMatching(/reconcile --once/) },
      });
      expect((await served.post('/api/v1/profiles/web/rebuild')).status).toBe(409);
      const requests = JSON.parse(await readFile(join(served.stateDir, 'rebuild-requests.json'), 'utf8')) as Record<
        string,
        string
      >;
      expect(Object.keys(requests)).toEqual(['web']);
    } finally {
      await lock.release();
      expect(await served.stop()).toBe(0);
      await cleanup();
    }
  });
});
