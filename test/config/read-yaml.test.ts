import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_YAML_BYTES, parseYamlMapping, readYamlMapping } from '../../src/config/read-yaml.js';
import { cleanup, tempRoot } from '../builders/profile-dir.js';

afterAll(cleanup);

const F = '/p/profile.yaml';

describe('parseYamlMapping', () => {
  it('a mapping parses to its value', () => {
    expect(parseYamlMapping(F, '# comment\nrunners: 2\nbase: { file: a.img }\n')).toEqual({
      ok: true,
      value: { runners: 2, base: { file: 'a.img' } },
    });
  });

  it('a syntax error is file + line:col + the first line of the message', () => {
    const r = parseYamlMapping(F, 'runners: 1\nbase:\n  file: [a.img\n');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.problems.length).toBeGreaterThan(0);
    for (const p of r.problems) {
      expect(p).toMatchObject({ file: F, severity: 'error', where: expect.stringMatching(/^\d+:\d+$/) });
      expect(p.message).not.toContain('\n');
    }
  });

  it('points at the offending line', () => {
    const r = parseYamlMapping(F, 'runners: 1\nrunners: 2\n');
    expect(r).toEqual({
      ok: false,
      problems: [{ file: F, where: '2:1', severity: 'error', message: 'Map keys must be unique' }],
    });
  });

  it.each([
    ['', 'file is empty'],
    ['# nothing\n', 'file is empty'],
    ['---\n', 'file is empty'],
    ['~\n', 'file is empty'],
  ])('%j is an empty file', (text, message) => {
    expect(parseYamlMapping(F, text)).toEqual({ ok: false, problems: [{ file: F, severity: 'error', message }] });
  });

  it.each([
    ['- a\n- b\n', 'a list'],
    ['hello\n', 'a string'],
    ['42\n', 'a number'],
    ['true\n', 'a boolean'],
  ])('%j is not a mapping', (text, kind) => {
    expect(parseYamlMapping(F, text)).toEqual({
      ok: false,
      problems: [{ file: F, where: '/', severity: 'error', message: `must be a mapping of keys, not ${kind}` }],
    });
  });

  it('an alias bomb is a problem, not an exception', () => {
    const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i < 6; i++)
      lines.push(
        `l${i}: &l${i} [${Array(10)
          .fill(i === 1 ? '*a' : `*l${i - 1}`)
          .join(', ')}]`,
      );
    const r = parseYamlMapping(F, lines.join('\n'));
    expect(r).toEqual({
      ok: false,
      problems: [{ file: F, severity: 'error', message: expect.stringContaining('Excessive alias count') }],
    });
  });
});

describe('readYamlMapping', () => {
  it('rejects a file over the limit from its size alone (a sparse 8 GiB file is not read)', async () => {
    const file = join(await tempRoot(), 'big.yaml');
    await writeFile(file, 'runners: 1\n');
    await truncate(file, 8 * 1024 ** 3);
    const started = Date.now();
    expect(await readYamlMapping(file)).toEqual({
      ok: false,
      problems: [
        { file, severity: 'error', message: `file is 8192.0 MiB; the limit is ${MAX_YAML_BYTES / 1048576} MiB` },
      ],
    });
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('a file at the limit is read', async () => {
    const file = join(await tempRoot(), 'edge.yaml');
    const head = 'runners: 1\n';
    await writeFile(file, head + '#'.repeat(MAX_YAML_BYTES - head.length - 1) + '\n');
    expect(await readYamlMapping(file)).toEqual({ ok: true, value: { runners: 1 } });
  });

  it('a missing file, a directory', async () => {
    const root = await tempRoot();
    await mkdir(join(root, 'dir.yaml'));
    expect(await readYamlMapping(join(root, 'missing.yaml'))).toEqual({
      ok: false,
      problems: [{ file: join(root, 'missing.yaml'), severity: 'error', message: 'no such file' }],
    });
    expect(await readYamlMapping(join(root, 'dir.yaml'))).toEqual({
      ok: false,
      problems: [{ file: join(root, 'dir.yaml'), severity: 'error', message: 'not a regular file' }],
    });
  });
});
