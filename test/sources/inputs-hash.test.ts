/** The build inputs hash (docs/design.md, "Concepts and naming") covers what goes into the image and nothing else. */
import { appendFile, chmod, mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CompiledProfile } from '../../src/sources/view.js';
import {
  aHostConfig,
  aProfileDir,
  cleanup,
  compileConfig,
  tempRoot,
  type ProfileDirBuilder,
} from '../builders/profile-dir.js';

afterAll(cleanup);

/** Writes one profile into a fresh source and returns the compiled profile. */
async function compiled(build: (sourceDir: string) => ProfileDirBuilder): Promise<CompiledProfile> {
  const root = await tempRoot();
  await build(join(root, 'src')).write();
  return compileOne(await aHostConfig(root).source('local', 'src').write());
}

async function compileOne(config: string, name = 'web'): Promise<CompiledProfile> {
  const result = await compileConfig(config);
  expect(result.ok, JSON.stringify(result.problems)).toBe(true);
  const profile = result.view?.profiles.find((p) => p.name === name);
  if (!profile) throw new Error(`no profile ${name}`);
  return profile;
}

const kernelProfile = (dir: string) => aProfileDir(dir, 'web').kernel('vmlinuz v1', 'initrd v1');

describe('build inputs hash', () => {
  it('is stable across key order, whitespace and comments', async () => {
    const plain = await compiled((d) =>
      aProfileDir(d, 'web').rawYaml(
        'runners: 1\nbase:\n  file: base.img\nguest:\n  cpus: 2\n  memory: 256\nprovision:\n  timeout: 10m\n',
      ),
    );
    const shuffled = await compiled((d) =>
      aProfileDir(d, 'web').rawYaml(
        [
          '# the web runners',
          'provision: { timeout: 10m }   # ten minutes',
          '',
          'guest:',
          '    memory: 256',
          '    cpus:   2',
          'base: {file: base.img}',
          'runners: 1',
          '',
        ].join('\n'),
      ),
    );
    expect(shuffled.inputsHash).toBe(plain.inputsHash);
    expect(plain.inputsHash).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it('is the same for equivalent spellings of a value (600 vs 10m, 1G vs 1024)', async () => {
    const a = await compiled((d) =>
      aProfileDir(d, 'web').yaml({ provision: { timeout: 600 }, guest: { memory: 1024 } }),
    );
    const b = await compiled((d) =>
      aProfileDir(d, 'web').yaml({ provision: { timeout: '10m' }, guest: { memory: '1G' } }),
    );
    expect(b.inputsHash).toBe(a.inputsHash);
  });

  it('does not depend on runners or labels', async () => {
    const a = await compiled((d) => aProfileDir(d, 'web').runners(1));
    const b = await compiled((d) => aProfileDir(d, 'web').runners(40).labels({ os: 'debian', arch: 'x86_64' }));
    expect(b.inputsHash).toBe(a.inputsHash);
  });

  it('changes with anything that goes into the image', async () => {
    const base = await compiled(kernelProfile);
    const variants = await Promise.all([
      compiled((d) => kernelProfile(d).yaml({ guest: { cpus: 2 } })),
      compiled((d) => kernelProfile(d).yaml({ guest: { cmdline: 'console=ttyS0' } })),
      compiled((d) => kernelProfile(d).yaml({ provision: { timeout: '5m' } })),
      compiled((d) => kernelProfile(d).yaml({ rebuild: { maxAge: '7d' } })),
      compiled((d) => kernelProfile(d).provisionFile('extra.txt', '')),
    ]);
    const hashes = new Set([base, ...variants].map((p) => p.inputsHash));
    expect(hashes.size).toBe(variants.length + 1);
  });

  it.each([
    ['the base image', 'base.img'],
    ['the provision script', 'provision/provision.sh'],
    ['another provision file', 'provision/files/motd'],
    ['the kernel', 'vmlinuz'],
    ['the initrd', 'initrd.img'],
  ])('changes when the bytes of %s change', async (_what, path) => {
    const root = await tempRoot();
    const { dir } = await kernelProfile(join(root, 'src')).provisionFile('files/motd', 'hello').write();
    const config = await aHostConfig(root).source('local', 'src').write();
    const before = await compileOne(config);
    expect(before.inputs.map((i) => i.path)).toContain(path);
    await writeFile(join(dir, path), 'other bytes');
    const after = await compileOne(config);
    expect(after.inputsHash).not.toBe(before.inputsHash);
    expect(after.inputs.find((i) => i.path === path)?.sha256).not.toBe(
      before.inputs.find((i) => i.path === path)?.sha256,
    );
    if (path === 'base.img') expect(after.baseVersion).not.toBe(before.baseVersion);
    else expect(after.baseVersion).toBe(before.baseVersion);
  });

  it('changes when a provision file becomes executable, and only then', async () => {
    const root = await tempRoot();
    const { dir } = await kernelProfile(join(root, 'src')).provisionFile('files/run', 'echo hi').write();
    const config = await aHostConfig(root).source('local', 'src').write();
    await chmod(join(dir, 'provision/files/run'), 0o644);
    const before = await compileOne(config);
    await chmod(join(dir, 'provision/files/run'), 0o664);
    expect((await compileOne(config)).inputsHash).toBe(before.inputsHash);
    await chmod(join(dir, 'provision/files/run'), 0o755);
    const after = await compileOne(config);
    expect(after.inputsHash).not.toBe(before.inputsHash);
    expect(after.inputs.find((i) => i.path === 'provision/files/run')).toMatchObject({ executable: true });
  });

  it('a profile moved to another source dir (with override) keeps its hash', async () => {
    const root = await tempRoot();
    const { dir } = await kernelProfile(join(root, 'one')).write();
    await aProfileDir(join(root, 'one'), 'api').write();
    const config = await aHostConfig(root).source('one', 'one').source('two', 'elsewhere/two').write();
    const before = await compileOne(config);
    const api = await compileOne(config, 'api');

    // Moved whole into the later source, which now overrides a changed copy left in the first.
    const moved = join(root, 'elsewhere', 'two', 'web');
    await mkdir(join(root, 'elsewhere', 'two'), { recursive: true });
    await rename(dir, moved);
    await appendFile(join(moved, 'profile.yaml'), 'override: true\n');
    await kernelProfile(join(root, 'one'))
      .yaml({ guest: { cpus: 4 } })
      .write();

    const after = await compileOne(config);
    expect(after.source).toBe('two');
    expect(after.dir).toBe(moved);
    expect(after.overrides).toBe(join(root, 'one', 'web', 'profile.yaml'));
    expect(after.inputsHash).toBe(before.inputsHash);
    expect((await compileOne(config, 'api')).inputsHash).toBe(api.inputsHash);
  });
});
