/** Bad input, part 2: names, paths leaving the profile dir, sources, merge markers (see bad-input-world.ts). */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { profileNameProblem } from '../../src/sources/read-profile.js';
import { aProfileDir, cleanup, corral, corralInProcess, currentTarget } from '../builders/profile-dir.js';
import { aWorld, expectNoStack, expectRejected } from './bad-input-world.js';

afterAll(cleanup);

describe('bad names, paths and sources are rejected with a clear message and state/current untouched', () => {
  it('a duplicate profile across two sources names both files', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'good').write();
    await expectRejected(
      w,
      `${file}: profile "good" is already defined in ${join(w.one, 'good', 'profile.yaml')}; add "override: true"`,
    );
  });

  it('profile dir names that are not valid profile names: "..x", upper case, 200 characters', async () => {
    const w = await aWorld();
    const long = 'a'.repeat(200);
    for (const name of ['..x', 'Web', long]) await aProfileDir(w.two, name).write();
    await expectRejected(
      w,
      `${join(w.two, '..x')}: invalid profile name "..x"`,
      `${join(w.two, 'Web')}: invalid profile name "Web"`,
      `${join(w.two, long)}: invalid profile name "${'a'.repeat(64)}…"`,
    );
  });

  it('a base file reached with ../ outside the profile dir', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .yaml({ base: { file: '../../../../etc/passwd' } })
      .write();
    await expectRejected(w, `${file}#/base/file: leaves the profile dir: ../../../../etc/passwd`);
  });

  it("a sibling profile's file is outside too", async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .yaml({ guest: { xml: '../../one/good/base.img' } })
      .write();
    await expectRejected(w, `${file}#/guest/xml: leaves the profile dir`);
  });

  it('an absolute path', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .yaml({ base: { file: '/etc/passwd' } })
      .write();
    await expectRejected(
      w,
      `${file}#/base/file: must be a path relative to the profile dir, not absolute: /etc/passwd`,
    );
  });

  it('a symlink escaping the profile dir', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').withoutFile('base.img').symlink('base.img', '/etc/passwd').write();
    await expectRejected(w, `${file}#/base/file: is a symlink leaving the profile dir: base.img`);
  });

  it('a symlink inside the provision dir escaping the profile dir', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').symlink('provision/secrets', '/etc/hostname').write();
    await expectRejected(w, `${file}#/provision/dir: is a symlink leaving the profile dir: provision/secrets`);
  });

  it('a provision dir that is itself a symlink out of the profile dir', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .withoutFile('provision/provision.sh')
      .symlink('provision', '/etc')
      .write();
    await expectRejected(w, `${file}#/provision/dir: is a symlink leaving the profile dir: provision`);
  });

  it('a symlink to a directory inside the provision dir', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .file('shared/a.txt', 'a')
      .symlink('provision/shared', '../shared')
      .write();
    await expectRejected(w, `${file}#/provision/dir: must be a regular file: provision/shared`);
  });

  it('a source dir that is a file', async () => {
    const w = await aWorld();
    await writeFile(w.two, 'not a dir');
    await expectRejected(w, `${w.two}: source "two": is not a directory`);
  });
});

describe('merge markers through the CLI', () => {
  it('override of nothing is a warning only: exit 0 and a new generation', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').override().write();
    const [validate, compile] = await Promise.all([
      corral(['validate', '--config', w.config]),
      corralInProcess(['compile', '--config', w.config]),
    ]);
    expectNoStack(validate, compile);
    expect(validate.exitCode, validate.stderr).toBe(0);
    expect(compile.exitCode, compile.stderr).toBe(0);
    for (const r of [validate, compile])
      expect(r.stderr).toContain(`warning: ${file}: "override: true" but no earlier source defines profile "web"`);
    expect(await currentTarget(w.stateDir)).toBe('compiled/2');
  });

  it('mask removes an earlier profile and `sources` shows it', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'good').mask().write();
    const validate = await corralInProcess(['validate', '--config', w.config]);
    expect(validate.exitCode, validate.stderr).toBe(0);
    expect(validate.stdout).toContain('ok: 0 profile(s)');
    const human = await corral(['sources', '--config', w.config]);
    expect(human.exitCode, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/good\s+\[MASKED\] by .*two\/good\/profile\.yaml, hides .*one\/good\/profile\.yaml/);
    const json = await corralInProcess(['sources', '--json', '--config', w.config]);
    const parsed = JSON.parse(json.stdout) as { profiles: unknown[]; masked: unknown[] };
    expect(parsed.profiles).toEqual([]);
    expect(parsed.masked).toEqual([{ name: 'good', file, masks: join(w.one, 'good', 'profile.yaml') }]);
    expectNoStack(validate, human, json);
  });
});

describe('profile names a directory cannot hold', () => {
  it.each([['../x'], ['a/b'], ['Upper'], ['a'.repeat(200)], ['-lead'], [''], ['x'.repeat(64)]])(
    '%j is rejected',
    (name) => {
      expect(profileNameProblem(name)).toMatch(/^invalid profile name ".*": use 1-63 characters/);
    },
  );

  it.each([['web'], ['a'], ['0-ci_runner'], ['x'.repeat(63)]])('%j is accepted', (name) => {
    expect(profileNameProblem(name)).toBeUndefined();
  });
});
