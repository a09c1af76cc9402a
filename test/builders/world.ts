/** A memory-backed world for driving the real pass wiring (runPass, WatchDaemon) in-process. */
import { pino } from 'pino';
import { GC_DEFAULTS, type HostConfig } from '../../src/config/host-config.js';
import { MemoryHypervisor, type MemoryOptions } from '../../src/hypervisor/memory/memory-hypervisor.js';
import type { PassDeps } from '../../src/reconcile/pass.js';
import { backoffStores, type Runtime } from '../../src/reconcile/runtime.js';
import type { CompiledProfile, CompiledView } from '../../src/sources/view.js';
import { EventLog } from '../../src/state/events.js';
import { createRunnerCi } from '../../src/ci/runner-ci.js';
import { CiOutageStore } from '../../src/state/ci-outages.js';
import { ClaimStore } from '../../src/state/claims.js';

export function aHostConfig(stateDir: string, overrides: Partial<HostConfig> = {}): HostConfig {
  return {
    prefix: 'ci',
    stateDir,
    imagesDir: `${stateDir}/images`,
    hypervisor: 'memory',
    libvirtUri: 'qemu:///system',
    libvirtDomainType: 'qemu',
    sources: [],
    concurrency: { builds: 2, clones: 3 },
    keepTemplates: 2,
    backoff: { initialSeconds: 30, maxSeconds: 60 },
    watch: { debounceMs: 50, resyncSeconds: 600, absentGraceSeconds: 60, events: true },
    minFreeBytes: 0,
    gc: { ...GC_DEFAULTS },
    ci: {
      host: 'test-host',
      backoff: { initialSeconds: 15, maxSeconds: 600 },
      claimWaitSeconds: 600,
      maxJobSeconds: 21600,
    },
    server: { host: '127.0.0.1', port: 0 },
    ...overrides,
  };
}

export function aView(profiles: CompiledProfile[], generation = 1): CompiledView {
  return { format_version: 1, hash: `h${generation}`, generation, compiledAt: '', masked: [], profiles };
}

export interface MemoryWorld {
  hypervisor: MemoryHypervisor;
  config: HostConfig;
  runtime: Runtime;
  deps: PassDeps;
}

export function memoryWorld(opts: {
  stateDir: string;
  clock: () => Date;
  sleep?: (ms: number) => Promise<void>;
  hypervisor?: Partial<MemoryOptions>;
  config?: Partial<HostConfig>;
  ownerToken?: string;
}): MemoryWorld {
  const config = aHostConfig(opts.stateDir, opts.config);
  const hypervisor = new MemoryHypervisor({ prefix: config.prefix, clock: opts.clock, ...opts.hypervisor });
  const runtime: Runtime = {
    hypervisor,
    events: new EventLog(opts.stateDir),
    ...backoffStores(config),
    clock: opts.clock,
    sleep: opts.sleep ?? (async () => undefined),
    pollMs: 10,
    ci: createRunnerCi({ host: config.ci.host, log: pino({ level: 'silent' }), clock: opts.clock, env: {} }),
    ciOutages: new CiOutageStore(opts.stateDir, config.ci.backoff),
    claims: new ClaimStore(opts.stateDir),
  };
  const deps: PassDeps = {
    ...runtime,
    config,
    log: pino({ level: 'silent' }),
    ...(opts.ownerToken ? { ownerToken: opts.ownerToken } : {}),
  };
  return { hypervisor, config, runtime, deps };
}
