/** The profile's `ci` section: schema, the either/or rules, defaults, and that it never changes the image. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createValidators, schemaPath } from '../../src/config/schema.js';
import { readProfile } from '../../src/sources/read-profile.js';
import { FileDigests, hashInputs } from '../../src/sources/inputs.js';
import { aProfileDir, cleanup, tempRoot } from '../builders/profile-dir.js';

afterEach(cleanup);
const validators = createValidators();

async function read(ci: unknown) {
  const root = await tempRoot();
  const p = await aProfileDir(root, 'web').yaml({ ci }).write();
  return readProfile('test', p.dir, 'web', validators);
}

async function problems(ci: unknown): Promise<string[]> {
  const r = await read(ci);
  return r.kind === 'invalid' ? r.problems.map((p) => `${p.where}: ${p.message}`) : [];
}

describe('ci section', () => {
  it('documents every field', () => {
    const schema = JSON.parse(readFileSync(schemaPath('profile'), 'utf8')) as {
      properties: { ci: SchemaNode };
    };
    interface SchemaNode {
      description?: string;
      properties?: Record<string, SchemaNode>;
    }
    const undocumented: string[] = [];
    const walk = (node: SchemaNode, at: string) => {
      if (!node.description) undocumented.push(at);
      for (const [k, v] of Object.entries(node.properties ?? {})) walk(v, `${at}/${k}`);
    };
    walk(schema.properties.ci, '/ci');
    expect(undocumented).toEqual([]);
  });

  it('github: defaults and a secret path resolved against the profile dir', async () => {
    const r = await read({ github: { owner: 'acme', repo: 'widgets', tokenFile: 'secrets/token' } });
    expect(r.kind).toBe('profile');
    if (r.kind !== 'profile') return;
    expect(r.profile.ci).toEqual({
      kind: 'github',
      api: 'https://api.github.com',
      scope: { kind: 'repo', owner: 'acme', repo: 'widgets' },
      runnerGroupId: 1,
      labels: [],
      auth: { kind: 'token', tokenFile: join(r.profile.dir, 'secrets/token') },
    });
  });

  it('github org with an App', async () => {
    const r = await read({
      github: {
        org: 'acme',
        runnerGroupId: 3,
        labels: ['gpu'],
        app: { appId: 1, installationId: 2, privateKeyFile: '/etc/k.pem' },
      },
    });
    expect(r.kind === 'profile' && r.profile.ci).toMatchObject({
      scope: { kind: 'org', org: 'acme' },
      runnerGroupId: 3,
      labels: ['gpu'],
      auth: { kind: 'app', appId: 1, installationId: 2, privateKeyFile: '/etc/k.pem' },
    });
  });

  it.each([
    [
      { github: { owner: 'a', repo: 'b', tokenFile: 't' }, gitlab: {} },
      '/ci: needs exactly one of "github", "gitlab" or "hook"',
    ],
    [{}, '/ci: needs exactly one of "github", "gitlab" or "hook"'],
    [{ gitlab: { image: 'x' } }, '/ci/gitlab/image: unknown key "image"'],
    [{ github: { owner: 'a', tokenFile: 't' } }, '/ci/github: needs "owner" and "repo"'],
    [{ github: { owner: 'a', repo: 'b', org: 'c', tokenFile: 't' } }, '/ci/github: needs "owner" and "repo"'],
    [{ github: { org: 'c' } }, '/ci/github: needs exactly one of "tokenFile" or "app"'],
    [{ github: { org: 'c', token: 'ghp_x' } }, '/ci/github/token: unknown key "token"'],
    [{ github: { org: 'c', tokenFile: 't', runnerGroupId: 0 } }, '/ci/github/runnerGroupId: must be >= 1'],
    [{ hook: {} }, '/ci/hook: must NOT have fewer than 1 properties'],
    [{ hook: { register: 'x', timeout: 'soon' } }, '/ci/hook/timeout: not a duration: "soon"'],
  ])('rejects %j', async (ci, expected) => {
    expect((await problems(ci)).join('\n')).toContain(expected);
  });

  it('gitlab and hook defaults', async () => {
    const g = await read({ gitlab: {} });
    expect(g.kind === 'profile' && g.profile.ci).toEqual({ kind: 'gitlab', buildsDir: '/builds', cacheDir: '/cache' });
    const h = await read({ hook: { register: './register.sh' } });
    expect(h.kind === 'profile' && h.profile.ci).toEqual({
      kind: 'hook',
      register: './register.sh',
      timeoutSeconds: 60,
    });
  });

  it('is not part of the image: the inputs hash is the same with or without it', async () => {
    const root = await tempRoot();
    const plain = await aProfileDir(root, 'a').baseFile('base.img', 'same').write();
    const withCi = await aProfileDir(root, 'b')
      .baseFile('base.img', 'same')
      .yaml({ ci: { gitlab: {} } })
      .write();
    const digests = new FileDigests();
    const hash = async (dir: string, name: string) => {
      const r = await readProfile('t', dir, name, validators);
      if (r.kind !== 'profile') throw new Error('invalid');
      const c = await hashInputs(r.profile, digests);
      return c.inputsHash;
    };
    expect(await hash(withCi.dir, 'b')).toBe(await hash(plain.dir, 'a'));
  });
});
