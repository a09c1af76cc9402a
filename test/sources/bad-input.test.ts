/**
 * Issue 3's "Bad input" list, through the real CLI: each case starts from a good compiled
 * generation, breaks something, and checks that `compile` and `validate` both exit 1 with a message
 * naming the file (and the key), print no stack trace, and leave `state/current` where it was.
 */
import { readdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { profileNameProblem } from '../../src/sources/read-profile.js';
import { MAX_YAML_BYTES } from '../../src/config/read-yaml.js';
import {
  aHostConfig,
  aProfileDir,
  cleanup,
  corral,
  currentTarget,
  refreshConfig,
  stackLines,
  tempRoot,
  type CliResult,
} from '../builders/profile-dir.js';

afterAll(cleanup);

interface World {
  root: string;
  config: string;
  stateDir: string;
  /** Two source dirs, in order; `one` already holds a good profile `good`. */
  one: string;
  two: string;
}

/** Two sources and one good profile, compiled once: `current` → compiled/1. */
async function aWorld(): Promise<World> {
  const root = await tempRoot();
  const one = join(root, 'one');
  const two = join(root, 'two');
  await aProfileDir(one, 'good').write();
  const host = aHostConfig(root).source('one', 'one').source('two', 'two');
  const config = await host.write();
  const first = await refreshConfig(config);
  expect(first.ok, JSON.stringify(first.problems)).toBe(true);
  expect(await currentTarget(host.stateDir)).toBe('compiled/1');
  return { root, config, stateDir: host.stateDir, one, two };
}

function expectNoStack(...results: CliResult[]): void {
  for (const r of results) expect(stackLines(r.stderr + r.stdout), r.stderr).toEqual([]);
}

/** compile and validate both fail, each printing every expected line; `current` and compiled/ unchanged. */
async function expectRejected(world: World, ...expected: (string | RegExp)[]): Promise<CliResult> {
  const [compile, validate] = await Promise.all([
    corral(['compile', '--config', world.config]),
    corral(['validate', '--config', world.config]),
  ]);
  expectNoStack(compile, validate);
  expect(compile.exitCode, compile.stderr).toBe(1);
  expect(validate.exitCode, validate.stderr).toBe(1);
  expect(compile.stderr).toContain('compile failed; generation 1 stays current');
  for (const line of expected) {
    for (const out of [compile.stderr, validate.stderr]) {
      if (typeof line === 'string') expect(out).toContain(line);
      else expect(out).toMatch(line);
    }
  }
  expect(await currentTarget(world.stateDir)).toBe('compiled/1');
  expect(await readdir(join(world.stateDir, 'compiled'))).toEqual(['1']);
  return validate;
}

describe.concurrent('bad profile input is rejected with a clear message and state/current untouched', () => {
  it('broken YAML: file:line:col: message', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').rawYaml('runners: 1\nbase:\n  file: [base.img\n').write();
    const validate = await expectRejected(w, new RegExp(`${escape(file)}:\\d+:\\d+: \\S`));
    expect(validate.stderr).not.toContain(`${file}#`);
  });

  it('a YAML list instead of a mapping', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').rawYaml('- runners: 1\n- base: x\n').write();
    await expectRejected(w, `${file}#/: must be a mapping of keys, not a list`);
  });

  it('a YAML scalar instead of a mapping', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').rawYaml('just some words\n').write();
    await expectRejected(w, `${file}#/: must be a mapping of keys, not a string`);
  });

  it('an unknown key (typo "runner:") names the key', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').yaml({ runners: undefined, runner: 2 }).write();
    await expectRejected(w, `${file}#/runner: unknown key "runner"`, `${file}#/: missing required key "runners"`);
  });

  it('an unknown nested key names its pointer', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .yaml({ guest: { cpu: 2 } })
      .write();
    await expectRejected(w, `${file}#/guest/cpu: unknown key "cpu"`);
  });

  it('a wrong type names the pointer and the expected type', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web')
      .yaml({ runners: 'two', labels: { os: 7 } })
      .write();
    await expectRejected(w, `${file}#/runners: must be integer`, `${file}#/labels/os: must be string`);
  });

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

  it('a symlink to a directory inside the provision dir (once an internal error)', async () => {
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

  it('a 10 MB profile.yaml is rejected by its size', async () => {
    const w = await aWorld();
    // Valid YAML padded with comments: only a size check can reject it.
    const padding = `# ${'x'.repeat(1021)}\n`.repeat(10 * 1024);
    const { file } = await aProfileDir(w.two, 'web')
      .rawYaml(`runners: 1\nbase: { file: base.img }\n${padding}`)
      .write();
    await expectRejected(w, `${file}: file is 10.0 MiB; the limit is 1 MiB`);
  });

  it('an empty profile file', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').rawYaml('').write();
    const { file: comments } = await aProfileDir(w.two, 'api').rawYaml('# nothing here yet\n').write();
    await expectRejected(w, `${file}: file is empty`, `${comments}: file is empty`);
  });

  it('a YAML alias bomb is a problem in its file, not a crash (once an internal error)', async () => {
    const w = await aWorld();
    const levels = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 6; i++)
      levels.push(
        `l${i}: &l${i} [${Array(10)
          .fill(i === 1 ? '*a' : `*l${i - 1}`)
          .join(', ')}]`,
      );
    const { file } = await aProfileDir(w.two, 'web')
      .rawYaml(`${levels.join('\n')}\n`)
      .write();
    await expectRejected(w, `${file}: Excessive alias count`);
  });

  it('collects all problems: two broken profiles are both reported', async () => {
    const w = await aWorld();
    const a = await aProfileDir(w.two, 'alpha').yaml({ runners: -1 }).write();
    const b = await aProfileDir(w.two, 'beta').rawYaml('runners: [\n').write();
    const c = await aProfileDir(w.one, 'gamma')
      .yaml({ provision: { timeout: 'soon' } })
      .write();
    const validate = await expectRejected(
      w,
      `${a.file}#/runners: must be >= 0`,
      new RegExp(`${escape(b.file)}:\\d+:\\d+: `),
      `${c.file}#/provision/timeout: not a positive duration: "soon"`,
    );
    expect(validate.stderr).toContain('3 error(s)');
  });
});

describe.concurrent('merge markers through the CLI', () => {
  it('override of nothing is a warning only: exit 0 and a new generation', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').override().write();
    const [validate, compile] = [
      await corral(['validate', '--config', w.config]),
      await corral(['compile', '--config', w.config]),
    ];
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
    const validate = await corral(['validate', '--config', w.config]);
    expect(validate.exitCode, validate.stderr).toBe(0);
    expect(validate.stdout).toContain('ok: 0 profile(s)');
    const human = await corral(['sources', '--config', w.config]);
    expect(human.exitCode, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/good\s+\[MASKED\] by .*two\/good\/profile\.yaml, hides .*one\/good\/profile\.yaml/);
    const json = await corral(['sources', '--json', '--config', w.config]);
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

describe('huge YAML', () => {
  it('an 8 GiB (sparse) profile.yaml is rejected from its size, without reading it', async () => {
    const w = await aWorld();
    const { file } = await aProfileDir(w.two, 'web').write();
    await truncate(file, 8 * 1024 ** 3);
    const started = Date.now();
    const r = await refreshConfig(w.config);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r.ok).toBe(false);
    expect(r.problems).toContainEqual({
      file,
      severity: 'error',
      message: `file is 8192.0 MiB; the limit is ${MAX_YAML_BYTES / 1048576} MiB`,
    });
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
