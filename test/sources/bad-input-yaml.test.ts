/** Bad input, part 1: what is wrong inside a profile.yaml (see bad-input-world.ts). */
import { truncate } from 'node:fs/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_YAML_BYTES } from '../../src/config/read-yaml.js';
import { aProfileDir, cleanup, refreshConfig } from '../builders/profile-dir.js';
import { aWorld, escapeRegExp as escape, expectRejected } from './bad-input-world.js';

afterAll(cleanup);

describe('bad profile.yaml content is rejected with a clear message and state/current untouched', () => {
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

  it('a YAML alias bomb is a problem in its file, not a crash', async () => {
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
      `${c.file}#/provision/timeout: not a duration: "soon"`,
    );
    expect(validate.stderr).toContain('3 error(s)');
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
