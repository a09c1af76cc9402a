/** The three base sources in profile.yaml, and what the compiler makes of each. */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/errors.js';
import { aHostConfig, aProfileDir, cleanup, compileConfig, tempRoot } from '../builders/profile-dir.js';

afterAll(cleanup);

async function compile(base: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const root = await tempRoot();
  await aProfileDir(join(root, 'src'), 'web')
    .yaml({ base: { ...base, file: base.file }, ...extra })
    .write();
  const config = await aHostConfig(root).source('src', 'src').write();
  const c = await compileConfig(config);
  return { ...c, messages: c.problems.map(formatProblem) };
}

const HEX = 'ab'.repeat(32);

describe('base sources', () => {
  it('url + sha256 is pinned: the version is known at compile time', async () => {
    const c = await compile({ file: undefined, url: 'https://images.example.org/debian-12.qcow2', sha256: HEX });
    expect(c.messages).toEqual([]);
    expect(c.view?.profiles[0]).toMatchObject({
      base: { kind: 'url', url: 'https://images.example.org/debian-12.qcow2', sha256: HEX },
      baseVersion: `sha256:${HEX}`,
    });
  });

  it('url + checksums is versioned per pass; file:// works; guest.disk and rebuild.onBaseUpdate are read', async () => {
    const c = await compile(
      { file: undefined, url: 'file:///srv/images/debian-12.qcow2', checksums: 'file:///srv/images/SHA256SUMS' },
      { guest: { disk: '40G' }, rebuild: { onBaseUpdate: false } },
    );
    expect(c.messages).toEqual([]);
    const p = c.view?.profiles[0];
    expect(p?.base).toEqual({
      kind: 'checksums',
      url: 'file:///srv/images/debian-12.qcow2',
      checksums: 'file:///srv/images/SHA256SUMS',
    });
    expect(p?.baseVersion).toBe('');
    expect(p?.guest.diskBytes).toBe(40 * 2 ** 30);
    expect(p?.rebuild).toEqual({ onBaseUpdate: false });
  });

  it('base.oci: a tag is versioned per pass (by the resolver), a digest at compile time', async () => {
    const tagged = await compile({ file: undefined, oci: 'registry.local:5000/bases/debian:12' });
    expect(tagged.problems).toEqual([]);
    expect(tagged.view?.profiles[0]).toMatchObject({
      base: { kind: 'oci', ref: 'registry.local:5000/bases/debian:12' },
      baseVersion: '',
    });
    const digest = `sha256:${HEX}`;
    const pinned = await compile({ file: undefined, oci: `registry.local:5000/bases/debian@${digest}` });
    expect(pinned.view?.profiles[0]?.baseVersion).toBe(digest);
  });

  it('rebuild.onBaseUpdate is policy, not input: toggling it changes no inputs hash', async () => {
    const url = { file: undefined, url: 'https://x.example/a.img', checksums: 'https://x.example/SUMS' };
    const on = await compile(url);
    const off = await compile(url, { rebuild: { onBaseUpdate: false } });
    expect(off.view?.profiles[0]?.inputsHash).toBe(on.view?.profiles[0]?.inputsHash);
  });

  it.each([
    [{ file: undefined, oci: 'debian:12' }, /#\/base\/oci: not an OCI reference "debian:12": name the registry host/],
    [
      { file: undefined, oci: 'registry.local/debian:12', sha256: HEX },
      /#\/base\/sha256: "sha256" goes with "url", not "oci"/,
    ],
    [
      { file: undefined, url: 'https://x.example/a.img' },
      /#\/base: base.url needs exactly one of "sha256" \(a pinned digest\) or "checksums"/,
    ],
    [
      { file: undefined, url: 'https://x.example/a.img', sha256: HEX, checksums: 'https://x.example/S' },
      /needs exactly one of "sha256"/,
    ],
    [
      { file: undefined, url: 'ftp://x.example/a.img', sha256: HEX },
      /#\/base\/url: unsupported URL scheme "ftp:" in ftp:\/\/x.example\/a.img/,
    ],
    [
      { file: undefined, url: 'https://x.example/', checksums: 'https://x.example/S' },
      /#\/base\/url: has no file name to look up in the checksum list/,
    ],
    [
      { file: undefined, url: 'https://u:secret@x.example/a.img', sha256: HEX },
      /#\/base\/url: put no credentials in a base URL/,
    ],
    [{ file: 'base.img', sha256: HEX }, /#\/base\/sha256: "sha256" goes with "url", not "file"/],
  ])('rejects %j clearly', async (base, message) => {
    const c = await compile(base);
    expect(c.ok).toBe(false);
    expect(c.messages.join('\n')).toMatch(message);
  });

  it('rejects a guest.disk that is not a size', async () => {
    const c = await compile({}, { guest: { disk: 'big' } });
    expect(c.messages.join('\n')).toMatch(/#\/guest\/disk: must match pattern/);
  });
});
