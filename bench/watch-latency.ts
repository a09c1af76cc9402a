import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, type BenchResult } from './types.js';

const EDITS = 20;

interface Line {
  time: number;
  msg: string;
  triggers?: string[];
  actions?: Record<string, number>;
}

/** The repo root, found by walking up (this file runs from bench/ or from dist-bench/bench/). */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'bin', 'corral.js'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find bin/corral.js above the bench');
    dir = parent;
  }
  return dir;
}

async function until<T>(check: () => T | undefined | false, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`bench watch latency: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Source edit → pass start in a real `corral watch` (memory backend, default 300 ms debounce):
 * the time from writing profile.yaml to the watch's "pass starting" log line, median of 20 edits,
 * each made once the previous one has converged. Also edit → converged.
 */
export async function benchWatchLatency(): Promise<BenchResult> {
  const root = await mkdtemp(join(tmpdir(), 'corral-bench-watch-'));
  const profile = join(root, 'src', 'p1');
  await mkdir(join(profile, 'provision'), { recursive: true });
  await writeFile(join(profile, 'base.img'), 'base\n');
  await writeFile(join(profile, 'provision', 'provision.sh'), '#!/bin/sh\n');
  const yaml = (runners: number) =>
    writeFile(join(profile, 'profile.yaml'), `runners: ${runners}\nbase: {file: base.img}\n`);
  await yaml(2);
  const config = join(root, 'corral.yaml');
  await writeFile(config, 'builtinProfiles: false\nsources:\n  - {name: bench, path: src}\n');
  const lines: Line[] = [];
  const child = spawn(
    process.execPath,
    [
      join(repoRoot(), 'bin', 'corral.js'),
      'watch',
      '--hypervisor',
      'memory',
      '--config',
      config,
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CORRAL_CONFIG: '', CORRAL_LOG_LEVEL: '' } },
  );
  let rest = '';
  child.stderr.on('data', (chunk: Buffer) => {
    const parts = (rest + chunk.toString()).split('\n');
    rest = parts.pop() ?? '';
    for (const part of parts) {
      try {
        lines.push(JSON.parse(part) as Line);
      } catch {
        // not a log line
      }
    }
  });
  const exited = new Promise((r) => child.on('exit', r));
  const runners = async () => {
    const text = await readFile(join(root, 'state', 'memory-hypervisor.json'), 'utf8').catch(() => '{"guests":[]}');
    const state = JSON.parse(text) as { guests: { name: string; state: string }[] };
    return state.guests.filter((g) => g.name.startsWith('ci-runner-p1.') && g.state === 'running').length;
  };
  const quiet = () => {
    const last = lines.filter((l) => l.msg === 'pass starting' || l.msg === 'pass done').pop();
    return last?.msg === 'pass done' && Object.keys(last.actions ?? {}).length === 0;
  };
  try {
    await until(() => quiet(), 'the first passes');
    const toStart: number[] = [];
    const toConverged: number[] = [];
    for (let i = 0; i < EDITS; i++) {
      const want = i % 2 === 0 ? 3 : 2;
      const edited = Date.now();
      await yaml(want);
      const start = await until(
        () => lines.find((l) => l.msg === 'pass starting' && l.time >= edited && l.triggers?.includes('change')),
        `the pass after edit ${i + 1}`,
      );
      toStart.push(start.time - edited);
      for (;;) {
        if ((await runners()) === want && quiet()) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      toConverged.push(Date.now() - edited);
    }
    const medianStart = median(toStart);
    return {
      name: `watch latency: source edit → pass start (median of ${EDITS}, debounce 300 ms)`,
      figures: {
        'median ms': Math.round(medianStart),
        'max ms': Math.round(Math.max(...toStart)),
        'median edit → converged ms': Math.round(median(toConverged)),
      },
      target: { text: '< 1000 ms', met: medianStart < 1000 },
    };
  } finally {
    child.kill('SIGTERM');
    await exited;
    await rm(root, { recursive: true, force: true });
  }
}
