import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FeedEvent } from './feed.js';
import type { Snapshot } from './read-model.js';

const BUILD_BUCKETS = [10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];
const PASS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const REPLACEMENT_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 120, 300];

export interface Metrics {
  registry: Registry;
  /** Feeds counters and histograms from the live stream. */
  onEvent(event: FeedEvent): void;
  /** Prometheus text format; gauges are computed from a fresh snapshot. */
  render(): Promise<string>;
  contentType: string;
}

/**
 * `/metrics`: gauges read from a snapshot at scrape time, counters and histograms fed by the live
 * stream from the moment this process started (the usual Prometheus semantics: a restart resets them).
 * One registry per server: nothing global.
 */
export function createMetrics(deps: { snapshot(): Promise<Snapshot>; now: () => Date }): Metrics {
  const registry = new Registry();
  let scraped: Snapshot | undefined;
  let lastPassOk: number | undefined;
  const desired = new Gauge({
    name: 'corral_runners_desired',
    help: 'Runner guests a profile asks for.',
    labelNames: ['profile'],
    registers: [registry],
  });
  const ready = new Gauge({
    name: 'corral_runners_ready',
    help: 'Runner guests running a clone of the live template.',
    labelNames: ['profile'],
    registers: [registry],
  });
  const running = new Gauge({
    name: 'corral_runners_running',
    help: 'Runner guests running, whatever template they were cloned from.',
    labelNames: ['profile'],
    registers: [registry],
  });
  const busy = new Gauge({
    name: 'corral_runners_busy',
    help: 'Runners the CI system reports busy with a job; only profiles whose CI state is known have a series.',
    labelNames: ['profile'],
    registers: [registry],
  });
  const templateAge = new Gauge({
    name: 'corral_template_age_seconds',
    help: "Age of a profile's live template.",
    labelNames: ['profile', 'current'],
    registers: [registry],
  });
  const building = new Gauge({
    name: 'corral_builds_in_flight',
    help: 'Rebuild guests running now.',
    labelNames: ['profile'],
    registers: [registry],
  });
  const pending = new Gauge({
    name: 'corral_profile_pending',
    help: '1 when a profile waits for something (a build, a back-off, a template) instead of converging.',
    labelNames: ['profile'],
    registers: [registry],
  });
  const lastPass = new Gauge({
    name: 'corral_last_successful_pass_timestamp_seconds',
    help: 'Unix time of the last pass that completed.',
    registers: [registry],
  });
  const buildDuration = new Histogram({
    name: 'corral_build_duration_seconds',
    help: 'Time from starting a rebuild guest to its promotion or discard.',
    labelNames: ['profile', 'result'],
    buckets: BUILD_BUCKETS,
    registers: [registry],
  });
  const builds = new Counter({
    name: 'corral_builds_total',
    help: 'Builds finished, by result (succeeded, failed).',
    labelNames: ['profile', 'result'],
    registers: [registry],
  });
  const actions = new Counter({
    name: 'corral_actions_total',
    help: 'Actions applied, by kind and result.',
    labelNames: ['action', 'result'],
    registers: [registry],
  });
  const passDuration = new Histogram({
    name: 'corral_pass_duration_seconds',
    help: 'Duration of the passes this process ran (observe, plan, apply; builds go on after).',
    buckets: PASS_BUCKETS,
    registers: [registry],
  });
  const replacement = new Histogram({
    name: 'corral_runner_replacement_latency_seconds',
    help: 'From a runner seen shut off (its job done) to a fresh runner of the profile seen running.',
    labelNames: ['profile'],
    buckets: REPLACEMENT_BUCKETS,
    registers: [registry],
  });

  /** Per profile, when each runner that shut off was first seen so (oldest first), awaiting a replacement. */
  const shutoffSince = new Map<string, number[]>();

  return {
    registry,
    contentType: registry.contentType,
    onEvent(event) {
      if (event.type === 'action') {
        actions.inc({ action: event.action, result: event.ok ? 'ok' : 'failed' });
        if (event.action === 'build') {
          const result = event.ok ? 'succeeded' : 'failed';
          builds.inc({ profile: event.profile, result });
          buildDuration.observe({ profile: event.profile, result }, event.durationMs / 1000);
        }
      } else if (event.type === 'pass' && event.phase === 'done') {
        lastPassOk = Date.parse(event.at);
        if (event.durationMs !== undefined) passDuration.observe(event.durationMs / 1000);
      } else if (event.type === 'guest' && event.role === 'runner') {
        const at = Date.parse(event.at);
        const queue = shutoffSince.get(event.profile) ?? [];
        if (event.state === 'shutoff' && event.previous !== 'shutoff') {
          queue.push(at);
          shutoffSince.set(event.profile, queue);
        } else if (event.state === 'running' && event.change === 'appeared' && queue.length > 0) {
          replacement.observe({ profile: event.profile }, (at - (queue.shift() as number)) / 1000);
        }
      }
    },
    async render() {
      scraped = await deps.snapshot();
      desired.reset();
      ready.reset();
      running.reset();
      busy.reset();
      templateAge.reset();
      building.reset();
      pending.reset();
      for (const p of scraped.profiles) {
        desired.set({ profile: p.name }, p.runners.desired);
        ready.set({ profile: p.name }, p.runners.ready);
        running.set({ profile: p.name }, p.runners.running);
        if (p.runners.busy !== null) busy.set({ profile: p.name }, p.runners.busy);
        if (p.template)
          templateAge.set({ profile: p.name, current: String(p.template.current) }, p.template.ageSeconds);
        building.set({ profile: p.name }, p.building ? 1 : 0);
        pending.set({ profile: p.name }, p.pending.length > 0 ? 1 : 0);
      }
      const fromWatch = scraped.lastPassAt ? Date.parse(scraped.lastPassAt) : undefined;
      const last = Math.max(lastPassOk ?? 0, fromWatch ?? 0);
      if (last > 0) lastPass.set(last / 1000);
      return registry.metrics();
    },
  };
}
