/**
 * Garbage collection, at the end of every pass and on demand (`corral gc`): kept-failed guests past
 * their time, files under imagesDir nothing uses (retired templates' disks a runner kept alive,
 * base versions no one wants, stale temp files of crashed downloads), build records beyond their
 * count, and old compiled generations. Runs only under the state-dir lock.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { GcSettings } from '../config/host-config.js';
import type { Hypervisor, ObservedGuest } from '../hypervisor/hypervisor.js';
import { parseName } from '../hypervisor/names.js';
import type { BaseCache } from '../images/base-cache.js';
import type { CompiledProfile } from '../sources/view.js';
import type { BuildRecords } from '../state/build-records.js';
import { oldGenerations } from '../state/compiled-store.js';
import { garbage, type FileEntry, type Removal } from './policy.js';
import { abandonedStaging, listStaging, removeStaging } from './staging.js';

export interface GcDeps {
  hypervisor: Hypervisor;
  bases: BaseCache;
  records: BuildRecords;
  stateDir: string;
  prefix: string;
  settings: GcSettings;
  clock: () => Date;
  log: Logger;
  /** The profiles as resolved by the last pass: their current base versions are wanted. */
  profiles: () => readonly CompiledProfile[];
  /** Rebuild guests queued or starting in this process: their files are being made. */
  inFlight?: ReadonlySet<string>;
}

export interface GcOptions {
  dryRun?: boolean;
  /** On demand: every kept-failed guest goes, whatever its age. */
  allFailedGuests?: boolean;
  /** Guest files younger than this stay (a floor-triggered collection runs beside clone work). */
  graceMs?: number;
}

export interface GcReport {
  dryRun: boolean;
  guests: { name: string; reason: string }[];
  files: Removal[];
  records: string[];
  generations: string[];
  freedBytes: number;
}

export async function collectGarbage(deps: GcDeps, opts: GcOptions = {}): Promise<GcReport> {
  const dryRun = opts.dryRun === true;
  const now = deps.clock().getTime();
  const observed = await deps.hypervisor.observe();
  const report: GcReport = { dryRun, guests: [], files: [], records: [], generations: [], freedBytes: 0 };

  for (const g of observed.guests.filter((x) => x.role === 'failed')) {
    const age = (now - Date.parse(g.meta.createdAt)) / 1000;
    if (!opts.allFailedGuests && !(age > deps.settings.keepFailedGuestsSeconds)) continue;
    report.guests.push({ name: g.name, reason: 'failed build kept by --keep-failed' });
    if (!dryRun) await deps.hypervisor.destroy(g.name);
  }
  const gone = new Set(report.guests.map((g) => g.name));
  const existing = observed.guests.filter((g) => !gone.has(g.name));

  // Listed before the backing chains are read: a pull that lands a base must already show as running.
  const staging = await listStaging(deps.bases.imagesDir);
  const running = staging.flatMap((s) => (s.heldBy ? [s.heldBy.sinceMs] : []));
  // Asked after the destroys above, and of every guest: only backing chains say what is in use.
  const inUse = new Set([...(await deps.hypervisor.filesInUse())].map((f) => path.resolve(f)));
  if (dryRun) for (const g of report.guests) for (const f of await deps.hypervisor.diskChain(g.name)) inUse.delete(f);
  report.files = garbage({
    imagesDir: deps.bases.imagesDir,
    files: await listFiles(deps.bases.imagesDir),
    inUse,
    keepBases: await basesToKeep(deps, existing),
    protectedKeys: protectedKeys(deps.prefix, deps.inFlight),
    now,
    graceMs: opts.graceMs ?? 0,
    ...(running.length > 0 ? { pullsRunningSinceMs: Math.min(...running) } : {}),
  });
  for (const f of report.files) {
    report.freedBytes += f.bytes;
    if (!dryRun) await rm(f.path, { force: true });
  }
  for (const s of abandonedStaging({
    entries: staging,
    wanted: wantedImages(deps.profiles()),
    now,
    keepMs: deps.settings.keepInterruptedPullsSeconds * 1000,
  })) {
    if (!dryRun && !(await removeStaging(s.path, deps.log))) continue;
    report.files.push(s);
    report.freedBytes += s.bytes;
  }

  report.records = await deps.records.prunable({
    keepFailed: deps.settings.keepFailedBuilds,
    keepOk: deps.settings.keepBuildRecords,
    existing: new Set(existing.map((g) => templateOf(deps.prefix, g))),
  });
  report.generations = await oldGenerations(deps.stateDir);
  if (!dryRun)
    for (const dir of [...report.records, ...report.generations]) await rm(dir, { recursive: true, force: true });

  const total = report.guests.length + report.files.length + report.records.length + report.generations.length;
  if (total > 0)
    deps.log.info(
      {
        dryRun,
        guests: report.guests.length,
        files: report.files.length,
        records: report.records.length,
        generations: report.generations.length,
        freedBytes: report.freedBytes,
      },
      dryRun ? 'garbage found (dry run)' : 'garbage collected',
    );
  return report;
}

/** The template name a guest's build record is filed under (records are named by template). */
function templateOf(prefix: string, g: ObservedGuest): string {
  return g.gen ? `${prefix}-template-${g.profile}@${g.gen}` : g.name;
}

/** Images whose interrupted pull must stay resumable: the digests profiles follow or build on now. */
function wantedImages(profiles: readonly CompiledProfile[]): Set<string> {
  const hex = (d: string) => d.replace(/^sha256:/, '');
  const wanted = new Set<string>();
  for (const p of profiles) {
    if (p.template?.digest) wanted.add(hex(p.template.digest));
    if (p.base.kind === 'oci' && p.baseVersion) wanted.add(hex(p.baseVersion));
  }
  return wanted;
}

async function basesToKeep(deps: GcDeps, guests: ObservedGuest[]): Promise<Set<string>> {
  const keep = new Set(deps.bases.busy());
  const hex = (v: string) => v.replace(/^sha256:/, '');
  for (const p of deps.profiles()) if (p.baseVersion) keep.add(hex(p.baseVersion));
  // Every guest's metadata names its base: a belt to the backing chains' braces.
  for (const g of guests) if (g.meta.baseVersion) keep.add(hex(g.meta.baseVersion));
  const records = await deps.records.list();
  const byProfile = new Map<string, string[]>();
  for (const m of records.reverse()) {
    if (m.result.verdict !== 'ok') continue;
    const versions = byProfile.get(m.profile.name) ?? [];
    if (!versions.includes(m.base.version) && versions.length < deps.settings.keepBaseVersions)
      versions.push(m.base.version);
    byProfile.set(m.profile.name, versions);
  }
  for (const versions of byProfile.values()) for (const v of versions) keep.add(hex(v));
  return keep;
}

function protectedKeys(prefix: string, inFlight: ReadonlySet<string> | undefined): string[] {
  const keys: string[] = [];
  for (const name of inFlight ?? []) {
    const parsed = parseName(prefix, name);
    if (parsed && parsed.role !== 'runner') keys.push(`${parsed.profile}@${parsed.gen}`);
  }
  return keys;
}

async function listFiles(dir: string): Promise<FileEntry[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const files: FileEntry[] = [];
  for (const e of entries) {
    if (!e.isFile()) continue;
    const file = path.join(e.parentPath, e.name);
    const info = await stat(file).catch(() => undefined);
    if (info) files.push({ path: file, bytes: info.size, mtimeMs: info.mtimeMs, ctimeMs: info.ctimeMs });
  }
  return files;
}
