/**
 * Shared by the bad-input test files (inputs corral must reject with a clear problem, never an internal error). Each case starts from a good
 * compiled generation, breaks something, and checks that `corral validate` (the real binary: exit
 * status, no stack trace on stderr) and `corral compile` (the CLI's main() in-process, for speed)
 * both exit 1 with a message naming the file (and the key), and that `state/current` still points
 * at the good generation.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import {
  aHostConfig,
  aProfileDir,
  corral,
  corralInProcess,
  currentTarget,
  refreshConfig,
  stackLines,
  tempRoot,
  type CliResult,
} from '../builders/profile-dir.js';

export interface World {
  root: string;
  config: string;
  stateDir: string;
  /** Two source dirs, in order; `one` already holds a good profile `good`. */
  one: string;
  two: string;
}

/** Two sources and one good profile, compiled once: `current` → compiled/1. */
export async function aWorld(): Promise<World> {
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

export function expectNoStack(...results: CliResult[]): void {
  for (const r of results) expect(stackLines(r.stderr + r.stdout), r.stderr).toEqual([]);
}

/** compile and validate both fail, each printing every expected line; `current` and compiled/ unchanged. */
export async function expectRejected(world: World, ...expected: (string | RegExp)[]): Promise<CliResult> {
  const [compile, validate] = await Promise.all([
    corralInProcess(['compile', '--config', world.config]),
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

export function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
