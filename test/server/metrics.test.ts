import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import parsePrometheusTextFormat, { type Family } from 'parse-prometheus-text-format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MemoryState } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { cleanup } from '../builders/profile-dir.js';
import { eventually, startServe, type Served } from './serve-harness.js';

describe('corral serve: /metrics in Prometheus text format', () => {
  let served: Served;
  beforeAll(async () => {
    served = await startServe({ profiles: { web: 2, bad: 1 }, buildMs: 300, outcomes: 'bad=fail' });
  });
  afterAll(async () => {
    expect(await served.stop()).toBe(0);
    await cleanup();
  });

  /**
   * Parsed twice: as served (types, and a parse error on any malformed line), and with the histograms'
   * TYPE lines dropped, because the parser folds a labelled histogram into one unlabelled series;
   * untyped, its `_bucket`, `_sum` and `_count` series keep their labels.
   */
  const scrape = async (): Promise<Map<string, Family>> => {
    const res = await served.get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const typed = parsePrometheusTextFormat(text);
    const series = parsePrometheusTextFormat(text.replace(/^# TYPE \S+ histogram$/gm, ''));
    // Untyped, a family's series come back as several families of one name (one per label set): merge them.
    const families = new Map<string, Family>();
    for (const f of series) {
      const seen = families.get(f.name);
      families.set(f.name, seen ? { ...seen, metrics: [...seen.metrics, ...f.metrics] } : f);
    }
    for (const f of typed) families.set(f.name, f);
    return families;
  };
  const sample = (families: Map<string, Family>, name: string, labels: Record<string, string> = {}) =>
    families.get(name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));

  it('reports runners, template age, builds, passes and runner replacement latency', async () => {
    expect((await served.post('/api/v1/reconcile')).status).toBe(202);
    const families = await eventually(
      async () => {
        const f = await scrape();
        // The runners are visible as ready before the pass that cloned them has ended and been timed:
        // wait for that pass too (the build pass and the clone pass), or the count below races it.
        return sample(f, 'corral_runners_ready', { profile: 'web' })?.value === '2' &&
          sample(f, 'corral_builds_total', { profile: 'bad', result: 'failed' }) &&
          Number(sample(f, 'corral_pass_duration_seconds')?.count) >= 2
          ? f
          : undefined;
      },
      15_000,
      'converged metrics',
    );

    expect(families.get('corral_runners_desired')?.type).toBe('GAUGE');
    expect(sample(families, 'corral_runners_desired', { profile: 'web' })?.value).toBe('2');
    expect(sample(families, 'corral_runners_desired', { profile: 'bad' })?.value).toBe('1');
    expect(sample(families, 'corral_runners_ready', { profile: 'bad' })?.value).toBe('0');
    // No profile here has a ci: section: the family is declared, with no series (test/server/ci-state.test.ts fills it).
    expect(families.get('corral_runners_busy')?.metrics ?? []).toEqual([]);
    expect(
      Number(sample(families, 'corral_template_age_seconds', { profile: 'web', current: 'true' })?.value),
    ).toBeGreaterThanOrEqual(0);
    expect(sample(families, 'corral_builds_total', { profile: 'web', result: 'succeeded' })?.value).toBe('1');
    expect(families.get('corral_builds_total')?.type).toBe('COUNTER');
    const web = { profile: 'web', result: 'succeeded' };
    expect(families.get('corral_build_duration_seconds')?.type).toBe('HISTOGRAM');
    expect(sample(families, 'corral_build_duration_seconds_count', web)?.value).toBe('1');
    expect(Number(sample(families, 'corral_build_duration_seconds_sum', web)?.value)).toBeGreaterThanOrEqual(0.3);
    expect(sample(families, 'corral_build_duration_seconds_bucket', { ...web, le: '10' })?.value).toBe('1');
    const lastPass = Number(sample(families, 'corral_last_successful_pass_timestamp_seconds')?.value);
    expect(Math.abs(lastPass - Date.now() / 1000)).toBeLessThan(60);
    expect(sample(families, 'corral_profile_pending', { profile: 'bad' })?.value).toBe('1');

    // A runner finishes its job and shuts off; the next pass replaces it, and the latency is measured.
    // (Edited in the backend's file once serve's passes are over and it has let go of the lock.)
    await eventually(
      async () => {
        const status = (await (await served.get('/api/v1/status')).json()) as { lock: unknown };
        return status.lock === null ? true : undefined;
      },
      10_000,
      'the passes to end',
    );
    const file = join(served.stateDir, 'memory-hypervisor.json');
    const shutOffAt = Date.now();
    const state = JSON.parse(await readFile(file, 'utf8')) as MemoryState;
    state.guests.find((g) => g.name === 'ci-runner-web.1')!.state = 'shutoff';
    await writeFile(`${file}.tmp`, JSON.stringify(state));
    await rename(`${file}.tmp`, file); // whole, as the backend writes it: serve may be reading it right now
    // No wait for the feed's next poll: a pass has the feed look before it acts, so the shut-off is
    // published (and timed) before the replacement appears, even when the pass comes at once.
    expect((await served.post('/api/v1/reconcile')).status).toBe(202);
    const after = await eventually(
      async () => {
        const f = await scrape();
        const count = sample(f, 'corral_runner_replacement_latency_seconds_count', { profile: 'web' });
        return count?.value === '1' ? f : undefined;
      },
      10_000,
      'a replacement latency sample',
    );
    const sampledWithinSeconds = (Date.now() - shutOffAt) / 1000;
    const latency = Number(sample(after, 'corral_runner_replacement_latency_seconds_sum', { profile: 'web' })?.value);
    // Measured between what the feed saw, so only bounded by the wall time from the shut-off to
    // the sample: above zero (the shut-off was seen before the replacement), and no longer than that.
    expect(latency).toBeGreaterThan(0);
    expect(latency).toBeLessThanOrEqual(sampledWithinSeconds);
  });
});
