import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileSources } from '../src/sources/compile.js';
import { FileDigests } from '../src/sources/inputs.js';
import { createValidators } from '../src/config/schema.js';
import { median, timeMs, type BenchResult } from './types.js';

/** Compile 1,000 profiles spread over 3 sources (a third of them overriding an earlier source). */
export async function benchCompile(): Promise<BenchResult> {
  const root = await mkdtemp(join(tmpdir(), 'corral-bench-compile-'));
  try {
    const sources = ['a', 'b', 'c'].map((name) => ({ name, path: join(root, name) }));
    for (let i = 0; i < 1000; i++) {
      const source = sources[i % 3]!;
      const dir = join(source.path, `p${i}`);
      await mkdir(join(dir, 'provision'), { recursive: true });
      await writeFile(join(dir, 'base.img'), `base ${i}`);
      await writeFile(join(dir, 'provision', 'provision.sh'), `#!/bin/sh\necho ${i}\n`);
      await writeFile(
        join(dir, 'profile.yaml'),
        `runners: ${i % 4}\nbase: { file: base.img }\nguest: { cpus: 1, memory: 512 }\nlabels: { n: "${i}" }\n`,
      );
    }
    const validators = createValidators();
    const cold = await timeMs(() => compileSources(sources, { validators, digests: new FileDigests() }));
    if (!cold.value.ok || cold.value.view?.profiles.length !== 1000)
      throw new Error('bench compile: unexpected result');
    const digests = new FileDigests();
    await compileSources(sources, { validators, digests });
    const warm: number[] = [];
    for (let i = 0; i < 5; i++) warm.push((await timeMs(() => compileSources(sources, { validators, digests }))).ms);
    return {
      name: 'compile 1,000 profiles / 3 sources',
      figures: { 'cold ms': Math.round(cold.ms), 'warm median ms (digest cache)': Math.round(median(warm)) },
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
