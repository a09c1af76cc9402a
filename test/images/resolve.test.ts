/** The resolve step: checksum lists read before planning, never an image; failures keep the last version. */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseChecksums } from '../../src/images/checksums.js';
import { BaseResolver, withBaseVersion } from '../../src/images/resolve.js';
import { fetchText } from '../../src/images/transport.js';
import type { CompiledProfile } from '../../src/sources/view.js';
import { aProfile } from '../builders/guests.js';
import { ImageServer } from '../harness/image-server.js';

const server = new ImageServer();
let stateDir: string;
beforeAll(async () => {
  stateDir = await mkdtemp(path.join(os.tmpdir(), 'corral-resolve-'));
  await server.start();
});
afterAll(async () => {
  await server.stop();
  await rm(stateDir, { recursive: true, force: true });
});

function listed(name: string, file: string, extra: Partial<CompiledProfile> = {}): CompiledProfile {
  return {
    ...aProfile(name).build(),
    base: { kind: 'checksums', url: `${server.url}/${file}`, checksums: `${server.url}/SHA256SUMS` },
    baseVersion: '',
    ...extra,
  };
}

describe('parseChecksums', () => {
  it('reads GNU (text and binary mode) and BSD lines, skipping everything else', () => {
    const a = 'a'.repeat(64);
    const b = 'B'.repeat(64);
    const c = 'c'.repeat(64);
    const text = `${a}  debian-12-genericcloud-amd64.qcow2\n${b} *./image.raw\nSHA256 (other.img) = ${c}\n-----BEGIN PGP SIGNATURE-----\n${'d'.repeat(128)}  sha512.img\n`;
    expect([...parseChecksums(text)]).toEqual([
      ['debian-12-genericcloud-amd64.qcow2', a],
      ['image.raw', 'b'.repeat(64)],
      ['other.img', c],
    ]);
  });
});

describe('BaseResolver', () => {
  it('gives each profile the listed version, reads a shared list once, and folds the version into the inputs hash', async () => {
    const one = server.publish('one.qcow2', Buffer.from('one'));
    server.publish('two.qcow2', Buffer.from('two'));
    const resolver = new BaseResolver({ stateDir, fetchText, clock: () => new Date(), record: true });
    const before = server.requests.length;
    const profiles = [listed('a', 'one.qcow2'), listed('b', 'two.qcow2'), aProfile('c').build()];
    const r = await resolver.resolve(profiles);
    expect(r.unresolved).toEqual({});
    expect(server.requests.length - before).toBe(1);
    expect(r.profiles[0]?.baseVersion).toBe(`sha256:${one}`);
    expect(r.profiles[0]?.inputsHash).not.toBe(profiles[0]?.inputsHash);
    expect(r.profiles[2]).toBe(profiles[2]); // a file base was versioned at compile time
    const remembered = JSON.parse(await readFile(path.join(stateDir, 'base-versions.json'), 'utf8')) as object;
    expect(Object.keys(remembered)).toHaveLength(2);
  });

  it('a new line for the file name is a new version: a new inputs hash, unless rebuild.onBaseUpdate is false', async () => {
    const p = listed('a', 'moving.qcow2');
    const optOut = { ...p, rebuild: { onBaseUpdate: false as const } };
    const resolver = new BaseResolver({ stateDir, fetchText, clock: () => new Date(), record: true });
    server.publish('moving.qcow2', Buffer.from('v1'));
    const [first, firstOut] = (await resolver.resolve([p, optOut])).profiles;
    const v2 = server.publish('moving.qcow2', Buffer.from('v2'));
    const [second, secondOut] = (await resolver.resolve([p, optOut])).profiles;
    expect(second?.inputsHash).not.toBe(first?.inputsHash);
    expect(secondOut?.baseVersion).toBe(`sha256:${v2}`);
    expect(secondOut?.inputsHash).toBe(firstOut?.inputsHash);
    expect(secondOut?.inputsHash).toBe(p.inputsHash);
  });

  it('when the list cannot be read, the last version stays (same hash) and the reason is given', async () => {
    const p = listed('a', 'kept.qcow2');
    server.publish('kept.qcow2', Buffer.from('kept'));
    const resolver = new BaseResolver({ stateDir, fetchText, clock: () => new Date(), record: true });
    const good = (await resolver.resolve([p])).profiles[0];
    const down = await new BaseResolver({
      stateDir,
      fetchText: () => Promise.reject(new Error('cannot read the list: fetch failed')),
      clock: () => new Date(),
      record: false,
    }).resolve([p]);
    expect(down.profiles[0]?.inputsHash).toBe(good?.inputsHash);
    expect(down.unresolved['a']?.reason).toMatch(
      /^cannot read the list: fetch failed; keeping base sha256:[0-9a-f]{12}… resolved /,
    );
  });

  it('a list without a line for the file is unresolved, with the file name in the reason', async () => {
    const resolver = new BaseResolver({ stateDir, fetchText, clock: () => new Date(), record: false });
    const r = await resolver.resolve([listed('a', 'absent.qcow2')]);
    expect(r.unresolved['a']?.reason).toBe(
      `the checksum list ${server.url}/SHA256SUMS has no sha256 line for "absent.qcow2"`,
    );
    expect(r.profiles[0]?.baseVersion).toBe('');
  });

  it('withBaseVersion is a pure function of the compiled hash and the version', () => {
    const p = aProfile().build();
    expect(withBaseVersion(p, 'sha256:1').inputsHash).toBe(withBaseVersion(p, 'sha256:1').inputsHash);
    expect(withBaseVersion(p, 'sha256:1').inputsHash).not.toBe(withBaseVersion(p, 'sha256:2').inputsHash);
  });
});
