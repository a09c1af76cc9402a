/** Enumerating sources (dirs and globs) and merging them (docs/design.md, "Files": merge rules), in-process. */
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expandGlob } from '../../src/sources/enumerate.js';
import { aHostConfig, aProfileDir, cleanup, compileConfig, tempRoot } from '../builders/profile-dir.js';

afterAll(cleanup);

describe('glob sources', () => {
  it('a glob matching two dirs yields both sources, in sorted order', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'mnt/disk-b/corral'), 'beta').write();
    await aProfileDir(join(root, 'mnt/disk-a/corral'), 'alpha').write();
    await mkdir(join(root, 'mnt/disk-c')); // matches `*` but has no corral/: absent, fine
    await writeFile(join(root, 'mnt/stray-file'), ''); // a file next to the disks: ignored
    const config = await aHostConfig(root).glob('mnt', 'mnt/*/corral').write();
    const result = await compileConfig(config);
    expect(result.problems).toEqual([]);
    expect(result.view?.profiles.map((p) => [p.name, p.source])).toEqual([
      ['alpha', `mnt:${join(root, 'mnt/disk-a/corral')}`],
      ['beta', `mnt:${join(root, 'mnt/disk-b/corral')}`],
    ]);
    expect(result.absent).toEqual([join(root, 'mnt/disk-c/corral')]);
  });

  it('the same profile under two glob matches is a duplicate naming both files', async () => {
    const root = await tempRoot();
    const a = await aProfileDir(join(root, 'mnt/a'), 'web').write();
    const b = await aProfileDir(join(root, 'mnt/b'), 'web').write();
    const result = await compileConfig(await aHostConfig(root).glob('mnt', 'mnt/*').write());
    expect(result.ok).toBe(false);
    expect(result.problems).toEqual([
      expect.objectContaining({ file: b.file, message: expect.stringContaining(`already defined in ${a.file}`) }),
    ]);
  });

  it('a glob matching nothing is fine', async () => {
    const root = await tempRoot();
    const config = await aHostConfig(root).glob('mnt', 'nowhere/*/corral').write();
    const result = await compileConfig(config);
    expect(result.ok).toBe(true);
    expect(result.problems).toEqual([]);
    expect(result.view?.profiles).toEqual([]);
  });

  it('matches `?` and classes, skips dot entries, follows symlinks to dirs', async () => {
    const root = await tempRoot();
    for (const d of ['d1', 'd2', 'dx', '.d3', 'real']) await mkdir(join(root, d));
    await symlink(join(root, 'real'), join(root, 'd4'));
    expect(await expandGlob(join(root, 'd?'))).toEqual(['d1', 'd2', 'd4', 'dx'].map((d) => join(root, d)));
    expect(await expandGlob(join(root, 'd[12]'))).toEqual([join(root, 'd1'), join(root, 'd2')]);
  });

  it('an unbalanced "[" matches literally instead of crashing', async () => {
    const root = await tempRoot();
    await mkdir(join(root, '[x'));
    expect(await expandGlob(join(root, '[x'))).toEqual([join(root, '[x')]);
  });

  it('a missing plain dir is fine too; a file where a dir should be is an error', async () => {
    const root = await tempRoot();
    await writeFile(join(root, 'file'), '');
    const config = await aHostConfig(root).source('gone', 'gone').source('file', 'file').write();
    const result = await compileConfig(config);
    expect(result.absent).toEqual([join(root, 'gone')]);
    expect(result.problems).toEqual([
      {
        file: join(root, 'file'),
        severity: 'error',
        message: 'source "file": is not a directory; its profiles are kept until it can be read',
      },
    ]);
  });
});

describe('reading one profile', () => {
  it('direct kernel boot needs both kernel and initrd', async () => {
    const root = await tempRoot();
    const { file } = await aProfileDir(join(root, 'one'), 'web')
      .yaml({ guest: { kernel: 'vmlinuz' } })
      .file('vmlinuz', 'k')
      .write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').write());
    expect(result.problems).toEqual([
      { file, where: '/guest', severity: 'error', message: 'direct kernel boot needs both "kernel" and "initrd"' },
    ]);
  });

  it('guest.xml, base.file or the entry script naming a directory is an error, not a crash', async () => {
    const root = await tempRoot();
    const { file } = await aProfileDir(join(root, 'one'), 'web')
      .yaml({ guest: { xml: 'provision' }, provision: { entry: 'lib' } })
      .provisionFile('lib/x.sh', '')
      .write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').write());
    expect(result.problems.map((p) => [p.file, p.where, p.message])).toEqual([
      [file, '/guest/xml', 'must be a regular file: provision'],
      [file, '/provision/entry', 'must be a regular file: lib'],
    ]);
  });
});

describe('merging sources', () => {
  it('a duplicate name is an error naming both files, and the earlier one is kept in order', async () => {
    const root = await tempRoot();
    const first = await aProfileDir(join(root, 'one'), 'web').write();
    const second = await aProfileDir(join(root, 'two'), 'web').write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').source('two', 'two').write());
    expect(result.ok).toBe(false);
    expect(result.view).toBeUndefined();
    expect(result.problems).toEqual([
      {
        file: second.file,
        severity: 'error',
        message: `profile "web" is already defined in ${first.file}; add "override: true" to replace it or "mask: true" to remove it`,
      },
    ]);
  });

  it('override replaces the earlier profile whole and records what it overrides', async () => {
    const root = await tempRoot();
    const first = await aProfileDir(join(root, 'one'), 'web').runners(5).labels({ os: 'debian' }).write();
    const second = await aProfileDir(join(root, 'two'), 'web').runners(1).override().write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').source('two', 'two').write());
    expect(result.problems).toEqual([]);
    const web = result.view?.profiles[0];
    expect(web).toMatchObject({ name: 'web', source: 'two', file: second.file, overrides: first.file, runners: 1 });
    expect(web?.labels).toEqual({}); // whole replacement, no key-by-key merge
  });

  it('override of nothing is only a warning', async () => {
    const root = await tempRoot();
    const lone = await aProfileDir(join(root, 'one'), 'web').override().write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').write());
    expect(result.ok).toBe(true);
    expect(result.problems).toEqual([
      { file: lone.file, severity: 'warning', message: '"override: true" but no earlier source defines profile "web"' },
    ]);
    expect(result.view?.profiles.map((p) => p.name)).toEqual(['web']);
  });

  it('mask removes the earlier profile; masking nothing is a warning; a mask holds nothing else', async () => {
    const root = await tempRoot();
    const web = await aProfileDir(join(root, 'one'), 'web').write();
    await aProfileDir(join(root, 'one'), 'api').write();
    const mask = await aProfileDir(join(root, 'two'), 'web').mask().write();
    const idle = await aProfileDir(join(root, 'two'), 'idle').mask().write();
    const config = await aHostConfig(root).source('one', 'one').source('two', 'two').write();
    const result = await compileConfig(config);
    expect(result.ok).toBe(true);
    expect(result.view?.profiles.map((p) => p.name)).toEqual(['api']);
    expect(result.view?.masked).toEqual([
      { name: 'idle', file: idle.file },
      { name: 'web', file: mask.file, masks: web.file },
    ]);
    expect(result.problems).toEqual([
      { file: idle.file, severity: 'warning', message: 'masks profile "idle", which no earlier source defines' },
    ]);

    await aProfileDir(join(root, 'two'), 'web').rawYaml('mask: true\nrunners: 3\n').write();
    const mixed = await compileConfig(config);
    expect(mixed.problems).toContainEqual({
      file: mask.file,
      where: '/runners',
      severity: 'error',
      message: 'a masking profile holds only "mask: true"',
    });
  });

  it('a later source may define a masked name again with override', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'one'), 'web').write();
    await aProfileDir(join(root, 'two'), 'web').mask().write();
    const third = await aProfileDir(join(root, 'three'), 'web').runners(3).write();
    const config = await aHostConfig(root).source('one', 'one').source('two', 'two').source('three', 'three').write();
    const result = await compileConfig(config);
    expect(result.ok, JSON.stringify(result.problems)).toBe(true);
    expect(result.view?.profiles.map((p) => [p.name, p.file])).toEqual([['web', third.file]]);
    expect(result.view?.masked).toEqual([]);
  });

  it('collects every problem across sources instead of stopping at the first', async () => {
    const root = await tempRoot();
    const a = await aProfileDir(join(root, 'one'), 'alpha').yaml({ runners: 'many' }).write();
    const b = await aProfileDir(join(root, 'one'), 'beta')
      .yaml({ base: { file: 'missing.img' } })
      .write();
    const c = await aProfileDir(join(root, 'two'), 'gamma').rawYaml('runners: 1\nbase: {file: base.img\n').write();
    await aProfileDir(join(root, 'two'), 'fine').write();
    const config = await aHostConfig(root).source('one', 'one').source('two', 'two').write();
    const result = await compileConfig(config);
    expect(result.ok).toBe(false);
    const files = new Set(result.problems.map((p) => p.file));
    expect(files).toEqual(new Set([a.file, b.file, c.file]));
  });

  it('hidden dirs and plain files in a source are not profiles; a visible dir without profile.yaml is an error', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'one'), 'web').write();
    await mkdir(join(root, 'one', '.git'));
    await writeFile(join(root, 'one', 'README.md'), '# profiles');
    const config = await aHostConfig(root).source('one', 'one').write();
    const result = await compileConfig(config);
    expect(result.problems).toEqual([]);
    expect(result.view?.profiles.map((p) => p.name)).toEqual(['web']);
    // Issue 14: a dir whose profile.yaml is missing might be a profile corral cannot read; never a removal.
    await mkdir(join(root, 'one', 'Notes'));
    const again = await compileConfig(config);
    expect(again.ok).toBe(false);
    expect(again.problems).toEqual([expect.objectContaining({ file: join(root, 'one', 'Notes'), severity: 'error' })]);
  });

  it('normalizes: defaults applied, paths absolute, inputs listed relative and sorted', async () => {
    const root = await tempRoot();
    const { dir, file } = await aProfileDir(join(root, 'one'), 'web').provisionFile('lib/a.sh', 'a').write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').write());
    const web = result.view?.profiles[0];
    expect(web).toMatchObject({
      name: 'web',
      source: 'one',
      dir,
      file,
      runners: 1,
      base: { kind: 'file', file: join(dir, 'base.img') },
      guest: { cpus: 1, memoryMiB: 512 },
      provision: { dir: join(dir, 'provision'), entry: 'provision.sh', timeoutSeconds: 1800 },
      rebuild: {},
      labels: {},
    });
    expect(web?.inputs.map((i) => i.path)).toEqual(['base.img', 'provision/lib/a.sh', 'provision/provision.sh']);
    expect(web?.baseVersion).toBe(web?.inputs[0] ? `sha256:${web.inputs[0].sha256}` : undefined);
  });

  it('a missing provision entry script and a missing referenced file are both errors', async () => {
    const root = await tempRoot();
    const { file } = await aProfileDir(join(root, 'one'), 'web')
      .withoutFile('provision/provision.sh')
      .provisionFile('other.sh', '')
      .yaml({ guest: { xml: 'domain.xml', kernel: 'vmlinuz' } })
      .file('vmlinuz', 'k')
      .write();
    const result = await compileConfig(await aHostConfig(root).source('one', 'one').write());
    expect(result.problems.map((p) => `${p.where}: ${p.message}`).sort()).toEqual([
      '/guest/xml: not found: domain.xml',
      '/provision: provision has neither provision.sh nor a cloud-init user-data: add one, or name the script in provision.entry',
    ]);
    expect(result.problems.every((p) => p.file === file)).toBe(true);
  });

  it('a cloud-init provision dir (user-data, no provision.sh) needs no entry; a named entry must exist', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'one'), 'web')
      .withoutFile('provision/provision.sh')
      .provisionFile('user-data', '#cloud-config\n')
      .provisionFile('meta-data', '')
      .write();
    const ok = await compileConfig(await aHostConfig(root).source('one', 'one').write());
    expect(ok.problems).toEqual([]);
    expect(ok.view?.profiles[0]?.provision.entry).toBeUndefined();
    await aProfileDir(join(root, 'two'), 'web')
      .withoutFile('provision/provision.sh')
      .provisionFile('user-data', '#cloud-config\n')
      .yaml({ provision: { entry: 'setup.sh' } })
      .write();
    const bad = await compileConfig(await aHostConfig(root).source('two', 'two').write());
    expect(bad.problems.map((p) => `${p.where}: ${p.message}`)).toEqual(['/provision/entry: not found: setup.sh']);
  });
});
