import { benchCiGitHub } from './ci-github.js';
import { benchCompile } from './compile.js';
import { benchBackoffExpiry, benchShutoffToRunning } from './events.js';
import { benchLibvirt } from './libvirt.js';
import { benchMemoryPass } from './memory-pass.js';
import { benchOci } from './oci.js';
import { benchPlan } from './plan.js';
import { benchWatchLatency } from './watch-latency.js';
import type { BenchResult } from './types.js';

/** `npm run bench [name…]`: each benchmark prints its figures and, where there is one, its target. */
const benches: [string, () => Promise<BenchResult | BenchResult[]>][] = [
  ['compile', benchCompile],
  ['plan', benchPlan],
  ['memory-pass', benchMemoryPass],
  ['watch', benchWatchLatency],
  ['libvirt', benchLibvirt],
  ['requeue', benchBackoffExpiry],
  ['events', benchShutoffToRunning],
  ['ci-github', benchCiGitHub],
  ['oci', benchOci],
];

const only = process.argv.slice(2);
let missed = 0;
for (const [key, bench] of benches) {
  if (only.length > 0 && !only.includes(key)) continue;
  try {
    for (const result of [await bench()].flat()) {
      const figures = Object.entries(result.figures)
        .map(([k, v]) => `${k}: ${v}`)
        .join(', ');
      const target = result.target ? `  [target ${result.target.text}: ${result.target.met ? 'met' : 'MISSED'}]` : '';
      if (result.target && !result.target.met) missed++;
      console.log(`${result.name}\n  ${figures}${target}`);
    }
  } catch (error) {
    missed++;
    console.log(`${key}: FAILED ${(error as Error).stack ?? String(error)}`);
  }
}
process.exitCode = missed > 0 ? 1 : 0;
