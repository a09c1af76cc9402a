/**
 * Shared by the issue-14 reliability tests: a host with two path sources (`local` holding `web`
 * with two runners, `usb` holding `db` with one) on the memory backend, reconciled once.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import {
  aHostConfig,
  aProfileDir,
  corralInProcess,
  tempRoot,
  type CliResult,
  type HostConfigBuilder,
} from '../builders/profile-dir.js';

export interface Host {
  root: string;
  config: string;
  stateDir: string;
  host: HostConfigBuilder;
}

export async function aReconciledHost(
  configure: (h: HostConfigBuilder) => HostConfigBuilder = (h) => h,
): Promise<Host> {
  const root = await tempRoot('corral-reliability-');
  await aProfileDir(join(root, 'local'), 'web').runners(2).write();
  await aProfileDir(join(root, 'usb'), 'db').runners(1).write();
  const host = configure(
    aHostConfig(root)
      .source('local', 'local')
      .source('usb', 'usb')
      .set({ watch: { absentGrace: '1h' } }),
  );
  const config = await host.write();
  const first = await cli(['reconcile', '--once', '--config', config]);
  expect(first.exitCode, first.stderr).toBe(0);
  expect(await guestNames(host.stateDir)).toEqual([
    'ci-runner-db.1',
    'ci-runner-web.1',
    'ci-runner-web.2',
    expect.stringMatching(/^ci-template-db@/),
    expect.stringMatching(/^ci-template-web@/),
  ]);
  return { root, config, stateDir: host.stateDir, host };
}

export function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return corralInProcess(args, { env });
}

/** The memory backend's guests, as the state dir holds them. */
export async function guestNames(stateDir: string): Promise<string[]> {
  const state = JSON.parse(await readFile(join(stateDir, 'memory-hypervisor.json'), 'utf8')) as {
    guests: { name: string }[];
  };
  return state.guests.map((g) => g.name).sort();
}

/** Lines of output that are not one whole message: a problem split over lines shows up here. */
export function strayLines(text: string, root: string): string[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .filter((l) => !/^(warning: |corral \w+: |\d+ error\(s\)$|ok: )/.test(l) && !l.trimStart().startsWith(root));
}
