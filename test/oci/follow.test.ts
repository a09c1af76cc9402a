/**
 * Profiles that follow or publish to a registry: how they compile, and how a pass resolves a tag
 * (or fails to) before planning. Plus the pure parts of the client: references and auth challenges,
 * and the bearer-token dance against a local server that follows the distribution spec.
 */
import http from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { parseChallenge } from '../../src/oci/auth.js';
import { RegistryClient } from '../../src/oci/client.js';
import { resolveFollowed } from '../../src/reconcile/follow.js';
import { parseReference } from '../../src/oci/reference.js';
import type { Observation } from '../../src/hypervisor/hypervisor.js';
import { aHostConfig, aProfileDir, cleanup, compileConfig, tempRoot } from '../builders/profile-dir.js';
import { freePort } from '../harness/registry.js';

afterAll(cleanup);

describe('profiles that follow or publish', () => {
  it('template: {oci} compiles without base or provisioning; publish needs a tag', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'src'), 'follower')
      .yaml({ base: undefined, template: { oci: '127.0.0.1:5000/ci/tiny:latest' }, runners: 3 })
      .withoutFile('base.img')
      .withoutFile('provision/provision.sh')
      .write();
    await aProfileDir(join(root, 'src'), 'builder')
      .yaml({ publish: { oci: 'registry.lan:5000/ci/builder:main' } })
      .write();
    const result = await compileConfig(await aHostConfig(root).source('src', 'src').write());
    expect(result.problems).toEqual([]);
    const [builder, follower] = result.view!.profiles;
    expect(follower).toMatchObject({ runners: 3, template: { oci: '127.0.0.1:5000/ci/tiny:latest' }, inputs: [] });
    expect(builder?.publish).toEqual({ oci: 'registry.lan:5000/ci/builder:main' });
  });

  it('says what is wrong, naming the field', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'src'), 'both')
      .yaml({ template: { oci: '127.0.0.1:5000/a/b:c' } })
      .write();
    await aProfileDir(join(root, 'src'), 'neither').yaml({ base: undefined }).write();
    await aProfileDir(join(root, 'src'), 'badref')
      .yaml({ base: undefined, template: { oci: 'tiny:latest' } })
      .write();
    await aProfileDir(join(root, 'src'), 'pinnedpub')
      .yaml({ publish: { oci: `127.0.0.1:5000/a/b@sha256:${'0'.repeat(64)}` } })
      .write();
    const result = await compileConfig(await aHostConfig(root).source('src', 'src').write());
    const messages = result.problems.map((p) => `${p.file.split('/').at(-2)}#${p.where}: ${p.message}`);
    expect(messages).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^both#\/base: "base" has no meaning with "template"/),
        expect.stringMatching(/^neither#: needs "base" .* or "template"/),
        expect.stringMatching(/^badref#\/template\/oci: not an OCI reference "tiny:latest": name the registry host/),
        expect.stringMatching(/^pinnedpub#\/publish\/oci: publish to a tag, not a digest/),
      ]),
    );
  });

  it('an unreachable registry keeps the newest template current and says why', async () => {
    const root = await tempRoot();
    const port = await freePort(); // nothing listens there
    await aProfileDir(join(root, 'src'), 'f')
      .yaml({ base: undefined, template: { oci: `127.0.0.1:${port}/ci/f:latest` } })
      .withoutFile('base.img')
      .write();
    const view = (await compileConfig(await aHostConfig(root).source('src', 'src').write())).view!;
    const meta = {
      profile: 'f',
      gen: '20260101T000000Z-aaaaaaaa',
      inputsHash: `sha256:${'a'.repeat(64)}`,
      baseVersion: `sha256:${'b'.repeat(64)}`,
      createdAt: '2026-01-01T00:00:00Z',
    };
    const observed: Observation = {
      guests: [
        { name: `ci-template-f@${meta.gen}`, role: 'template', profile: 'f', gen: meta.gen, state: 'shutoff', meta },
      ],
      unrecognized: [],
    };
    const followed = await resolveFollowed(view.profiles, observed, { get: () => Promise.resolve(undefined) });
    expect(followed.profiles[0]).toMatchObject({ inputsHash: meta.inputsHash, baseVersion: meta.baseVersion });
    expect(followed.waits).toEqual([
      {
        profile: 'f',
        kind: 'registry',
        reason: expect.stringMatching(
          new RegExp(`^cannot resolve 127.0.0.1:${port}/ci/f:latest: .*; runners stay on ci-template-f@${meta.gen}$`),
        ),
      },
    ]);
  });
});

describe('references and auth', () => {
  it('parses references and refuses ones without a registry host', () => {
    expect(parseReference('127.0.0.1:5000/team/img')).toEqual({
      registry: '127.0.0.1:5000',
      repository: 'team/img',
      tag: 'latest',
    });
    expect(parseReference(`reg.example/a/b:v1@sha256:${'c'.repeat(64)}`)).toMatchObject({
      tag: 'v1',
      digest: `sha256:${'c'.repeat(64)}`,
    });
    expect(() => parseReference('ubuntu:22.04')).toThrow(/name the registry host/);
    expect(() => parseReference('reg.example/Upper/x')).toThrow(/not a valid repository name/);
  });

  it('parses Basic and Bearer challenges', () => {
    expect(parseChallenge('Basic realm="corral-test"')).toEqual({ scheme: 'basic', params: { realm: 'corral-test' } });
    expect(
      parseChallenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
      ),
    ).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull' },
    });
  });

  it('fetches a bearer token for the scope with the credentials, and a fresh one when the registry answers 401', async () => {
    const tokenRequests: { scope: string[]; authorization?: string }[] = [];
    let issued = 0;
    let accepted = '';
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/token') {
        tokenRequests.push({
          scope: url.searchParams.getAll('scope'),
          ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
        });
        accepted = `t${++issued}`;
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ token: accepted, expires_in: 60 }));
        return;
      }
      if (req.headers.authorization !== `Bearer ${accepted}` || !accepted) {
        const host = req.headers.host;
        res
          .writeHead(401, {
            'www-authenticate': `Bearer realm="http://${host}/token",service="test",scope="repository:a/b:pull"`,
          })
          .end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      res.writeHead(200, { 'docker-content-digest': `sha256:${'d'.repeat(64)}` }).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const client = new RegistryClient(host, {
        credentials: { get: () => Promise.resolve({ username: 'u', password: 'p' }) },
        retryDelayMs: 1,
      });
      expect(await client.resolve('a/b', 'latest')).toBe(`sha256:${'d'.repeat(64)}`);
      expect(tokenRequests).toEqual([
        { scope: ['repository:a/b:pull'], authorization: `Basic ${Buffer.from('u:p').toString('base64')}` },
      ]);
      accepted = 'expired-elsewhere'; // the registry no longer takes t1
      expect(await client.resolve('a/b', 'latest')).toBe(`sha256:${'d'.repeat(64)}`);
      expect(tokenRequests).toHaveLength(2);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
