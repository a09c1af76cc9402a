/**
 * Issue 14: random profile documents and file trees never make `validate` throw, and every problem
 * is one line naming its file, with a JSON pointer or a line:column where it has a position.
 */
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { createValidators } from '../../src/config/schema.js';
import { formatProblem } from '../../src/errors.js';
import { compileSources } from '../../src/sources/compile.js';
import { FileDigests } from '../../src/sources/inputs.js';
import { cleanup, tempRoot } from '../builders/profile-dir.js';

afterAll(cleanup);

const nameArb = fc.oneof(
  fc.constantFrom(
    'web',
    'db',
    'a',
    'provision',
    'base.img',
    'profile.yaml',
    '.hidden',
    'x y',
    'Ünïcode',
    'a\nb',
    'esc\u001b[2J',
  ),
  fc
    .string({ unit: 'binary', minLength: 1, maxLength: 8 })
    .filter((s) => !s.includes('/') && !s.includes('\0') && s !== '.' && s !== '..'),
  fc
    .string({ minLength: 1, maxLength: 12 })
    .filter((s) => !s.includes('/') && !s.includes('\0') && s !== '.' && s !== '..'),
);

const scalarArb = fc.oneof(
  fc.integer({ min: -5, max: 5000 }),
  fc.double({ noNaN: false }),
  fc.constantFrom('30m', '0', '1G', 'soon', '9'.repeat(400), '', 'base.img', '../x', '/etc/passwd', true, null),
  fc.string({ maxLength: 20 }),
);

/** Documents shaped like profiles (so the deep checks run), and anything at all. */
const docArb = fc.oneof(
  fc.record(
    {
      runners: scalarArb,
      base: fc.oneof(fc.record({ file: scalarArb }, { requiredKeys: [] }), scalarArb),
      guest: fc.record(
        { cpus: scalarArb, memory: scalarArb, kernel: scalarArb, initrd: scalarArb },
        { requiredKeys: [] },
      ),
      provision: fc.record({ dir: scalarArb, entry: scalarArb, timeout: scalarArb }, { requiredKeys: [] }),
      rebuild: fc.record({ maxAge: scalarArb }, { requiredKeys: [] }),
      labels: fc.dictionary(fc.string({ maxLength: 8 }), scalarArb, { maxKeys: 3 }),
      override: scalarArb,
      mask: fc.constantFrom(true, false, 'yes'),
    },
    { requiredKeys: [] },
  ),
  fc.jsonValue({ maxDepth: 3 }),
);

const textArb = fc.oneof(
  docArb.map((doc) => stringify(doc)),
  fc.string({ maxLength: 80 }),
  fc.constantFrom('', '---', '~', 'a: &x [*x]', 'runners: 1\nrunners: 2\n', '{', 'base: {file: base.img\n'),
);

const entryArb = fc.record({
  path: fc.array(nameArb, { minLength: 1, maxLength: 3 }),
  kind: fc.constantFrom('file', 'dir', 'symlink-out', 'symlink-loop', 'symlink-dangling'),
});

const treeArb = fc.array(
  fc.record({
    name: nameArb,
    text: fc.option(textArb, { nil: undefined }),
    entries: fc.array(entryArb, { maxLength: 4 }),
  }),
  { minLength: 1, maxLength: 3 },
);

describe('validate on random profiles', () => {
  it('never throws; every problem is one line with a file, and a pointer or position when it has one', async () => {
    const validators = createValidators();
    const root = await tempRoot('corral-fuzz-');
    let run = 0;
    await fc.assert(
      fc.asyncProperty(treeArb, async (tree) => {
        const source = join(root, `s${run++}`);
        await mkdir(source);
        for (const profile of tree) {
          const dir = join(source, profile.name);
          await mkdir(dir, { recursive: true }).catch(() => undefined);
          if (profile.text !== undefined)
            await writeFile(join(dir, 'profile.yaml'), profile.text).catch(() => undefined);
          for (const e of profile.entries) {
            const path = join(dir, ...e.path);
            await mkdir(join(path, '..'), { recursive: true }).catch(() => undefined);
            const make = {
              file: () => writeFile(path, 'bytes'),
              dir: () => mkdir(path, { recursive: true }),
              'symlink-out': () => symlink('/etc', path),
              'symlink-loop': () => symlink(e.path.at(-1) ?? 'x', path),
              'symlink-dangling': () => symlink('nowhere', path),
            }[e.kind];
            await make?.().catch(() => undefined);
          }
        }
        const result = await compileSources([{ name: 'fuzz', path: source }], {
          validators,
          digests: new FileDigests(),
        });
        expect(result.ok).toBe(result.problems.every((p) => p.severity !== 'error'));
        for (const p of result.problems) {
          expect(p.file, p.message).not.toBe('');
          expect(formatProblem(p)).not.toMatch(/[\n\r]/);
          if (p.where !== undefined) expect(p.where).toMatch(/^(\/.*|\d+:\d+)$/);
          if (p.file.endsWith('profile.yaml') && /^must |^unknown key|^missing required/.test(p.message))
            expect(p.where).toBeDefined();
        }
        await rm(source, { recursive: true, force: true });
      }),
      { numRuns: 120 },
    );
  });
});
