import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { packageRoot } from '../util/package-root.js';
import { ConfigError, type Problem } from '../errors.js';
import { checkDuration, type Range } from '../util/duration.js';
import { parseSize } from '../util/size.js';
import { readYamlMapping } from './read-yaml.js';
import { schemaProblems, type Validators } from './schema.js';

export type SourceSpec = { name: string; path: string } | { name: string; glob: string };

export interface GcSettings {
  /** Base versions kept per profile for rollback (newest successful builds first), besides those in use. */
  keepBaseVersions: number;
  /** Failed-build records kept per profile. */
  keepFailedBuilds: number;
  /** Records of successful builds whose template is gone, kept per profile. */
  keepBuildRecords: number;
  /** How long a guest set aside by `--keep-failed` stays before a pass collects it (`corral gc` takes them all). */
  keepFailedGuestsSeconds: number;
  /**
   * How long the staging dir of an interrupted pull stays after its last write, so that pulling
   * the same image again resumes it; a dir a live pull holds (its lock) or a profile wants stays anyway.
   */
  keepInterruptedPullsSeconds: number;
}

export interface HostConfig {
  /** The file the config came from; undefined for the built-in default. */
  file?: string;
  prefix: string;
  stateDir: string;
  imagesDir: string;
  hypervisor: 'libvirt' | 'memory';
  libvirtUri: string;
  libvirtDomainType: 'qemu' | 'kvm';
  /** Ordered: the built-in profiles first (unless disabled), then the config's sources. */
  sources: SourceSpec[];
  concurrency: { builds: number; clones: number };
  keepTemplates: number;
  backoff: { initialSeconds: number; maxSeconds: number };
  /** `events`: guest lifecycle events trigger passes (false: only the resync and the plan's requeue look again). */
  watch: { debounceMs: number; resyncSeconds: number; absentGraceSeconds: number; events: boolean };
  /** Free space imagesDir must keep; below it: collect, then refuse downloads and builds. */
  minFreeBytes: number;
  gc: GcSettings;
  /**
   * `host`: this machine's name in CI registrations; back-off after a CI system failed;
   * `claimWaitSeconds`: how long GitLab's prepare waits for a free ready runner (0: fail at once);
   * `maxJobSeconds`: a claim older than this is stale (its cleanup never came): the runner is replaced.
   */
  ci: {
    host: string;
    backoff: { initialSeconds: number; maxSeconds: number };
    claimWaitSeconds: number;
    maxJobSeconds: number;
  };
  /** `corral serve` / `watch --serve`: where to listen, and the file holding the bearer token for mutations. */
  server: { host: string; port: number; tokenFile?: string };
}

/** GitLab's prepare waits this long for a free ready runner before a system failure. */
export const DEFAULT_CLAIM_WAIT_SECONDS = 600;
/** A GitLab claim older than this (no cleanup came) is stale; like rollout.drainTimeout's default. */
export const DEFAULT_MAX_JOB_SECONDS = 6 * 3600;

export const DEFAULT_LISTEN = { host: '127.0.0.1', port: 8470 };

/** What gc keeps when the host config says nothing (docs/images.md). */
export const GC_DEFAULTS = {
  keepBaseVersions: 2,
  keepFailedBuilds: 10,
  keepBuildRecords: 20,
  keepFailedGuestsSeconds: 86400,
  keepInterruptedPullsSeconds: 86400,
} as const;

const DAY = 86400;
/** Sane bounds for every duration of the host config (seconds), checked at load with file and key. */
export const RANGES = {
  backoffInitial: { min: 1, max: 7 * DAY },
  backoffMax: { min: 1, max: 30 * DAY },
  debounce: { min: 0, max: 60 },
  resync: { min: 1, max: 7 * DAY },
  absentGrace: { min: 0, max: 30 * DAY },
  keepFailedGuests: { min: 0, max: 365 * DAY },
  keepInterruptedPulls: { min: 0, max: 30 * DAY },
  claimWait: { min: 0, max: DAY },
  maxJobDuration: { min: 60, max: 30 * DAY },
} satisfies Record<string, Range>;

export function builtinProfilesDir(): string {
  return join(packageRoot(), 'profiles');
}

/** `--config`, then $CORRAL_CONFIG, then ./corral.yaml, then /etc/corral/config.yaml; none → defaults. */
export function findConfigFile(explicit: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string | undefined {
  const named = explicit ?? env.CORRAL_CONFIG;
  if (named) return resolve(cwd, named);
  for (const candidate of [resolve(cwd, 'corral.yaml'), '/etc/corral/config.yaml']) {
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

export async function loadHostConfig(
  file: string | undefined,
  opts: { validators: Validators; env: NodeJS.ProcessEnv; cwd: string },
): Promise<HostConfig> {
  let raw: Record<string, unknown> = {};
  if (file) {
    const read = await readYamlMapping(file, { allowPipe: true });
    if (!read.ok) throw new ConfigError(`invalid host config ${file}`, read.problems);
    raw = read.value;
    if (!opts.validators.config(raw)) {
      throw new ConfigError(`invalid host config ${file}`, schemaProblems(file, opts.validators.config.errors));
    }
  }
  return normalize(raw, file, opts);
}

function normalize(
  raw: Record<string, unknown>,
  file: string | undefined,
  opts: { env: NodeJS.ProcessEnv; cwd: string },
): HostConfig {
  const c = raw as {
    prefix?: string;
    stateDir?: string;
    imagesDir?: string;
    hypervisor?: 'libvirt' | 'memory';
    libvirt?: { uri?: string; domainType?: 'qemu' | 'kvm' };
    builtinProfiles?: boolean;
    sources?: { name: string; path?: string; glob?: string }[];
    concurrency?: { builds?: number; clones?: number };
    keepTemplates?: number;
    rebuild?: { backoffInitial?: unknown; backoffMax?: unknown };
    watch?: { debounce?: unknown; resync?: unknown; absentGrace?: unknown; events?: boolean };
    minFreeSpace?: number | string;
    gc?: {
      keepBaseVersions?: number;
      keepFailedBuilds?: number;
      keepBuildRecords?: number;
      keepFailedGuests?: unknown;
      keepInterruptedPulls?: unknown;
    };
    ci?: {
      host?: string;
      backoffInitial?: unknown;
      backoffMax?: unknown;
      claimWait?: unknown;
      maxJobDuration?: unknown;
    };
    server?: { listen?: string; tokenFile?: string };
  };
  // `--config /dev/stdin` (or a process substitution): relative paths are relative to where corral runs, not /dev.
  const base = file && !/^\/(dev|proc)\//.test(file) ? dirname(file) : opts.cwd;
  const where = file ?? '(built-in default config)';
  const problems: Problem[] = [];
  const duration = (value: unknown, pointer: string, fallback: number, range: Range): number => {
    if (value === undefined) return fallback;
    const checked = checkDuration(value, range);
    if ('message' in checked) {
      problems.push({ file: where, where: pointer, severity: 'error', message: checked.message });
      return fallback;
    }
    return checked.seconds;
  };
  const sources: SourceSpec[] = c.builtinProfiles === false ? [] : [{ name: 'builtin', path: builtinProfilesDir() }];
  const seen = new Set(sources.map((s) => s.name));
  (c.sources ?? []).forEach((s, i) => {
    if (seen.has(s.name))
      problems.push({
        file: where,
        where: `/sources/${i}/name`,
        severity: 'error',
        message: `duplicate source name "${s.name}"`,
      });
    seen.add(s.name);
    if ((s.path === undefined) === (s.glob === undefined)) {
      problems.push({
        file: where,
        where: `/sources/${i}`,
        severity: 'error',
        message: 'a source needs exactly one of "path" or "glob"',
      });
    } else if (s.path !== undefined) sources.push({ name: s.name, path: resolve(base, s.path) });
    else sources.push({ name: s.name, glob: resolve(base, s.glob as string) });
  });
  const minFreeBytes = (): number => {
    if (c.minFreeSpace === undefined) return 2 * 2 ** 30;
    if (c.minFreeSpace === 0) return 0;
    const bytes = parseSize(c.minFreeSpace);
    if (bytes === undefined)
      problems.push({
        file: where,
        where: '/minFreeSpace',
        severity: 'error',
        message: `not a size: ${JSON.stringify(c.minFreeSpace)} (use e.g. 10G, or 0 for no floor)`,
      });
    return bytes ?? 0;
  };
  const gcSettings = (): HostConfig['gc'] => ({
    keepBaseVersions: c.gc?.keepBaseVersions ?? GC_DEFAULTS.keepBaseVersions,
    keepFailedBuilds: c.gc?.keepFailedBuilds ?? GC_DEFAULTS.keepFailedBuilds,
    keepBuildRecords: c.gc?.keepBuildRecords ?? GC_DEFAULTS.keepBuildRecords,
    keepFailedGuestsSeconds: duration(
      c.gc?.keepFailedGuests,
      '/gc/keepFailedGuests',
      GC_DEFAULTS.keepFailedGuestsSeconds,
      RANGES.keepFailedGuests,
    ),
    keepInterruptedPullsSeconds: duration(
      c.gc?.keepInterruptedPulls,
      '/gc/keepInterruptedPulls',
      GC_DEFAULTS.keepInterruptedPullsSeconds,
      RANGES.keepInterruptedPulls,
    ),
  });
  const serverSettings = (): HostConfig['server'] => {
    const listen = c.server?.listen === undefined ? DEFAULT_LISTEN : parseListen(c.server.listen);
    if (!listen)
      problems.push({
        file: where,
        where: '/server/listen',
        severity: 'error',
        message: `not an address: ${JSON.stringify(c.server?.listen)} (use e.g. 127.0.0.1:8470, [::1]:8470 or :8470)`,
      });
    return {
      ...(listen ?? DEFAULT_LISTEN),
      ...(c.server?.tokenFile !== undefined ? { tokenFile: resolve(base, c.server.tokenFile) } : {}),
    };
  };
  const config: HostConfig = {
    ...(file ? { file } : {}),
    prefix: c.prefix ?? 'ci',
    stateDir: resolve(base, c.stateDir ?? 'state'),
    imagesDir: resolve(base, c.imagesDir ?? 'images'),
    hypervisor: c.hypervisor ?? 'libvirt',
    libvirtUri: c.libvirt?.uri ?? opts.env.LIBVIRT_DEFAULT_URI ?? 'qemu:///system',
    libvirtDomainType: c.libvirt?.domainType ?? 'qemu',
    sources,
    concurrency: { builds: c.concurrency?.builds ?? 2, clones: c.concurrency?.clones ?? 4 },
    keepTemplates: c.keepTemplates ?? 2,
    backoff: {
      initialSeconds: duration(c.rebuild?.backoffInitial, '/rebuild/backoffInitial', 60, RANGES.backoffInitial),
      maxSeconds: duration(c.rebuild?.backoffMax, '/rebuild/backoffMax', 3600, RANGES.backoffMax),
    },
    watch: {
      debounceMs: duration(c.watch?.debounce, '/watch/debounce', 0.3, RANGES.debounce) * 1000,
      resyncSeconds: duration(c.watch?.resync, '/watch/resync', 60, RANGES.resync),
      absentGraceSeconds: duration(c.watch?.absentGrace, '/watch/absentGrace', 120, RANGES.absentGrace),
      events: c.watch?.events ?? true,
    },
    ci: {
      host: c.ci?.host ?? hostname().split('.')[0] ?? 'localhost',
      backoff: {
        initialSeconds: duration(c.ci?.backoffInitial, '/ci/backoffInitial', 15, RANGES.backoffInitial),
        maxSeconds: duration(c.ci?.backoffMax, '/ci/backoffMax', 600, RANGES.backoffMax),
      },
      claimWaitSeconds: duration(c.ci?.claimWait, '/ci/claimWait', DEFAULT_CLAIM_WAIT_SECONDS, RANGES.claimWait),
      maxJobSeconds: duration(
        c.ci?.maxJobDuration,
        '/ci/maxJobDuration',
        DEFAULT_MAX_JOB_SECONDS,
        RANGES.maxJobDuration,
      ),
    },
    // Read in this order, after ci, so problems are listed as before.
    minFreeBytes: minFreeBytes(),
    gc: gcSettings(),
    server: serverSettings(),
  };
  if (config.backoff.maxSeconds < config.backoff.initialSeconds)
    problems.push({
      file: where,
      where: '/rebuild/backoffMax',
      severity: 'error',
      message: `must not be shorter than rebuild.backoffInitial (${config.backoff.initialSeconds}s)`,
    });
  if (problems.length > 0) throw new ConfigError(`invalid host config ${where}`, problems);
  return config;
}

/** `host:port`, `[v6]:port`, `:port` (all interfaces) or a bare port (127.0.0.1); undefined when malformed. */
export function parseListen(value: string): { host: string; port: number } | undefined {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):)?(\d{1,5})$/.exec(value.trim());
  if (!match) return undefined;
  const port = Number(match[2]);
  if (port > 65535) return undefined;
  const host =
    match[1] === undefined ? DEFAULT_LISTEN.host : match[1] === '' ? '0.0.0.0' : match[1].replace(/^\[|\]$/g, '');
  return { host, port };
}
