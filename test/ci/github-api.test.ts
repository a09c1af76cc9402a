/**
 * corral's real octokit client (retry + throttling plugins, auth-app) against the documented fake
 * GitHub server over loopback.
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createGitHubApi, type GitHubApi, type GitHubSpec } from '../../src/ci/github/api.js';
import { ForgeError } from '../../src/ci/github/forge-error.js';
import {
  deregisterJitRunner,
  orphanedRegistrations,
  registerJitRunner,
  registrationName,
  runnerLabels,
} from '../../src/ci/github/registrar.js';
import { FAKE_GITHUB_TOKEN, startFakeGitHub, type FakeGitHub } from '../harness/fake-github.js';

const log = pino({ level: 'silent' });
const FAST = { timeoutMs: 500, retries: 1, retryBaseMs: 5, minWriteIntervalMs: 0 };
let gh: FakeGitHub;
let dir: string;

beforeAll(async () => {
  gh = await startFakeGitHub();
  dir = await mkdtemp(join(tmpdir(), 'corral-gh-'));
  await writeFile(join(dir, 'token'), `${FAKE_GITHUB_TOKEN}\n`, { mode: 0o600 });
});
afterAll(async () => {
  await gh.close();
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  gh.down(undefined);
  gh.runners.clear();
  gh.requests.length = 0;
});

function spec(over: Partial<GitHubSpec> = {}): GitHubSpec {
  return {
    api: gh.url,
    scope: { kind: 'repo', owner: 'acme', repo: 'widgets' },
    runnerGroupId: 1,
    labels: ['big'],
    auth: { kind: 'token', tokenFile: join(dir, 'token') },
    ...over,
  };
}

async function client(over: Partial<GitHubSpec> = {}, tuning = FAST): Promise<GitHubApi> {
  return createGitHubApi(spec(over), { log, clock: () => new Date(), tuning });
}

async function forgeError(p: Promise<unknown>): Promise<ForgeError> {
  const error = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ForgeError);
  return error as ForgeError;
}

describe('JIT registration', () => {
  it('asks generate-jitconfig with the documented body and returns the encoded config for the seed', async () => {
    const api = await client();
    const name = registrationName('ci-runner-tiny.1', 'host-a');
    const labels = runnerLabels('tiny', 'X64', ['big']);
    const { seedFiles, registration } = await registerJitRunner(api, { name, runnerGroupId: 1, labels });
    expect(gh.issued).toHaveLength(gh.issued.length);
    const issued = gh.issued.find((i) => i.name === 'ci-runner-tiny.1@host-a');
    expect(issued?.labels).toEqual(['self-hosted', 'X64', 'corral-tiny', 'big']);
    expect(issued?.runnerGroupId).toBe(1);
    expect(seedFiles).toEqual({ 'github-jitconfig': issued?.encodedJitConfig });
    expect(registration.name).toBe(name);
    const post = gh.requests.find((r) => r.method === 'POST');
    expect(post?.path).toBe('/repos/acme/widgets/actions/runners/generate-jitconfig');
    expect(post?.authorization).toBe(`token ${FAKE_GITHUB_TOKEN}`);
    expect(post?.accept).toMatch(/application\/vnd\.github/);
  });

  it('org scope uses the org endpoints', async () => {
    const api = await client({ scope: { kind: 'org', org: 'acme' } });
    await registerJitRunner(api, { name: 'r@h', runnerGroupId: 1, labels: ['self-hosted'] });
    expect(gh.requests.at(-1)?.path).toBe('/orgs/acme/actions/runners/generate-jitconfig');
    expect(await api.listRunners()).toMatchObject([{ name: 'r@h', status: 'offline', busy: false }]);
  });

  it('a 409 name conflict deletes the stale registration and retries', async () => {
    const api = await client();
    const stale = gh.addRunner('repos/acme/widgets', 'ci-runner-tiny.1@host-a');
    const { registration } = await registerJitRunner(api, {
      name: 'ci-runner-tiny.1@host-a',
      runnerGroupId: 1,
      labels: ['self-hosted'],
    });
    expect(gh.runners.has(stale.id)).toBe(false);
    expect(gh.runners.get(registration.id)?.name).toBe('ci-runner-tiny.1@host-a');
    expect(gh.requests.map((r) => `${r.method} ${r.path.split('?')[0]}`)).toEqual([
      'POST /repos/acme/widgets/actions/runners/generate-jitconfig',
      'GET /repos/acme/widgets/actions/runners',
      `DELETE /repos/acme/widgets/actions/runners/${stale.id}`,
      'POST /repos/acme/widgets/actions/runners/generate-jitconfig',
    ]);
  });

  it('an unknown runner group (404) is a transient failure naming the status', async () => {
    const api = await client();
    const e = await forgeError(api.generateJitConfig({ name: 'x@h', runnerGroupId: 7, labels: ['a'] }));
    expect(e.summary).toBe('404 Not Found');
  });
});

describe('listing and the orphan sweep', () => {
  it('follows Link pagination over every page', async () => {
    for (let i = 0; i < 230; i++) gh.addRunner('repos/acme/widgets', `r${i}@${i % 2 ? 'host-a' : 'host-b'}`);
    const api = await client();
    const all = await api.listRunners();
    expect(all).toHaveLength(230);
    expect(gh.requests.filter((r) => r.method === 'GET')).toHaveLength(3);
    const orphans = orphanedRegistrations(all, 'host-a', new Set(['r1', 'r3']));
    expect(orphans).toHaveLength(113);
    expect(orphans.every((o) => o.name.endsWith('@host-a'))).toBe(true);
  });

  it('deregistering deletes exactly the registrations of that name', async () => {
    gh.addRunner('repos/acme/widgets', 'a@h');
    gh.addRunner('repos/acme/widgets', 'b@h');
    const api = await client();
    expect(await deregisterJitRunner(api, 'a@h')).toBe(1);
    expect([...gh.runners.values()].map((r) => r.name)).toEqual(['b@h']);
    expect(await deregisterJitRunner(api, 'a@h')).toBe(0);
  });
});

describe('every GitHub failure is transient, short and secret-free', () => {
  it('a JSON 503 (after the retry plugin gave up)', async () => {
    gh.down('503');
    const api = await client();
    const e = await forgeError(api.listRunners());
    expect(e.summary).toBe('503 Service Unavailable');
    // retries: 1 → two attempts
    expect(gh.requests).toHaveLength(2);
  });

  it('a 503 that clears is retried inside the call', async () => {
    gh.fail('503', 1);
    const api = await client();
    expect(await api.listRunners()).toEqual([]);
  });

  it('an HTML 502 page never reaches the message', async () => {
    gh.down('html502');
    const e = await forgeError((await client()).listRunners());
    expect(e.summary).toBe('HTML 502 page');
    expect(e.message).not.toMatch(/<html|Unicorn|DOCTYPE/i);
  });

  it('a 401', async () => {
    gh.down('401');
    const e = await forgeError((await client()).listRunners());
    expect(e.summary).toBe('401 Bad credentials');
    expect(e.message).not.toContain(FAKE_GITHUB_TOKEN);
  });

  it('a 403 rate limit carries x-ratelimit-reset as the retry time', async () => {
    gh.down('ratelimit403');
    gh.rateLimitResetIn = 120;
    const e = await forgeError((await client()).listRunners());
    expect(e.summary).toBe('403 rate limited');
    const inSeconds = ((e.retryAt?.getTime() ?? 0) - Date.now()) / 1000;
    expect(inSeconds).toBeGreaterThan(100);
    expect(inSeconds).toBeLessThanOrEqual(121);
  });

  it('a short rate limit is waited out inside the call (throttling plugin)', async () => {
    gh.rateLimitResetIn = 0;
    gh.fail('ratelimit403', 1);
    expect(await (await client()).listRunners()).toEqual([]);
  });

  it('a 429 with retry-after', async () => {
    gh.rateLimitResetIn = 90;
    gh.down('429');
    const e = await forgeError((await client()).listRunners());
    expect(e.summary).toMatch(/^429/);
    const inSeconds = ((e.retryAt?.getTime() ?? 0) - Date.now()) / 1000;
    expect(inSeconds).toBeGreaterThan(80);
  });

  it('a server that never answers is a timeout', async () => {
    gh.down('hang');
    const e = await forgeError((await client({}, { ...FAST, retries: 0 })).listRunners());
    expect(e.summary).toBe('timeout');
  });

  it('a closed port is unreachable', async () => {
    const closed = await startFakeGitHub();
    await closed.close();
    const e = await forgeError((await client({ api: closed.url })).listRunners());
    expect(e.summary).toMatch(/^unreachable/);
  });

  it('an unreadable token file is a config error, not a secret leak', async () => {
    await expect(client({ auth: { kind: 'token', tokenFile: join(dir, 'missing') } })).rejects.toThrow(
      /cannot read the GitHub token file .*missing: ENOENT/,
    );
  });
});

describe('GitHub App authentication (@octokit/auth-app)', () => {
  it('signs a JWT, gets an installation token and uses it', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const appGh = await startFakeGitHub({
      app: { appId: 42, installationId: 7, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() },
    });
    try {
      const keyFile = join(dir, 'app.pem');
      await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
      const api = await createGitHubApi(
        {
          ...spec(),
          api: appGh.url,
          auth: { kind: 'app', appId: 42, installationId: 7, privateKeyFile: keyFile },
        },
        { log, clock: () => new Date(), tuning: FAST },
      );
      await registerJitRunner(api, { name: 'r@h', runnerGroupId: 1, labels: ['self-hosted'] });
      expect(appGh.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
        'POST /app/installations/7/access_tokens',
        'POST /repos/acme/widgets/actions/runners/generate-jitconfig',
      ]);
      expect(appGh.requests[1]?.authorization).toBe('token ghs_installation_token_abcdef');
    } finally {
      await appGh.close();
    }
  });
});
