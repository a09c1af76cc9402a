import type {
  BuildCheck,
  BuildRequest,
  GuestEventKind,
  GuestEventSink,
  GuestEventStream,
  GuestState,
  Hypervisor,
  Observation,
  RunnerCondition,
  RunnerRequest,
  ScriptOptions,
} from '../hypervisor.js';
import { classify, UNRECOGNIZED, type RawGuest } from '../classify.js';
import { GuestExistsError, NoSuchGuestError, TransientError } from '../../errors.js';
import {
  finishBuildIfDue,
  type BuildOutcome,
  type MemoryGuest,
  type MemoryState,
  type Method,
} from './memory-guest.js';
import { HostScripts } from './host-scripts.js';
import { SeedFiles } from './seed-files.js';

export type { BuildOutcome, MemoryGuest, MemoryState, Method } from './memory-guest.js';

const STATE_EVENT: Partial<Record<GuestState, { kind: GuestEventKind; detail: string }>> = {
  running: { kind: 'started', detail: 'Booted' },
  shutoff: { kind: 'stopped', detail: 'Shutdown' },
  crashed: { kind: 'crashed', detail: 'Crashed' },
};

export interface MemoryOptions {
  prefix: string;
  clock: () => Date;
  /** How each profile's builds end (default: succeed). */
  outcome?: (profile: string) => BuildOutcome;
  /** Simulated build duration on the injected clock. */
  buildMs?: number;
  /** Persists state after every change (the CLI keeps it in the state dir between runs). */
  save?: (state: MemoryState) => Promise<void>;
  initial?: MemoryState;
  /** Where runners' seed files go (0600 files, a dir per runner); absent: kept in this object only. */
  seedsDir?: string;
  /**
   * Test and demo only: run `runScript` scripts as host processes, each runner in its own dir
   * under this one (host-scripts.ts says why and what it does not protect). Absent: the backend
   * cannot run scripts, and says so.
   */
  hostScriptsDir?: string;
}

const NO_SCRIPTS =
  'the memory backend runs scripts only when asked to (CORRAL_MEMORY_SCRIPTS=host, test and demo only: they run on this host)';

/**
 * A hypervisor that keeps real state in memory: ships in the product for dry demos
 * (`--hypervisor memory`) and is what unit tests use. Builds can be told to succeed, fail,
 * hang or crash; any call can be made to fail; calls are counted.
 */
export class MemoryHypervisor implements Hypervisor {
  readonly kind = 'memory';
  readonly calls: Record<Method, number> = {
    observe: 0,
    startBuild: 0,
    checkBuild: 0,
    promote: 0,
    createRunner: 0,
    destroy: 0,
  };
  private readonly guests = new Map<string, MemoryGuest>();
  private readonly backing = new Map<string, string>();
  private readonly failures: { method: Method; remaining: number; message: string }[] = [];
  private saving: Promise<unknown> = Promise.resolve();
  private readonly sinks = new Set<GuestEventSink>();
  private readonly seeds: SeedFiles;
  private readonly scripts: HostScripts | undefined;

  constructor(private readonly opts: MemoryOptions) {
    this.seeds = new SeedFiles(opts.seedsDir);
    this.scripts = opts.hostScriptsDir ? new HostScripts(opts.hostScriptsDir) : undefined;
    for (const g of opts.initial?.guests ?? []) {
      // State files from before seeds left them: the secrets go (the runner keeps its seed disk name).
      delete (g as { seed?: unknown }).seed;
      this.guests.set(g.name, g);
    }
    for (const [disk, base] of Object.entries(opts.initial?.backing ?? {})) this.backing.set(disk, base);
  }

  /** The next `times` calls of `method` fail with a transient error. */
  failNext(method: Method, times = 1, message = `injected ${method} failure`): void {
    this.failures.push({ method, remaining: times, message });
  }

  /** Test and demo hook: a guest not owned by corral, or a runner whose job finished. */
  addForeignGuest(name: string, state: GuestState = 'running'): void {
    this.guests.set(name, { name, state, disks: [], console: [] });
    this.emit(name, 'defined', 'Added');
    if (state === 'running') this.emit(name, 'started', 'Booted');
  }

  /** Test and demo hook: what a guest does by itself (a runner shuts off after its job, or crashes). */
  setState(name: string, state: GuestState): void {
    const guest = this.mustGet(name);
    guest.state = state;
    const event = STATE_EVENT[state];
    if (event) this.emit(name, event.kind, event.detail);
  }

  /** Test and demo hook: what a running runner says on its status channel (undefined: cannot tell = ready). */
  setCondition(name: string, condition: RunnerCondition | undefined): void {
    const guest = this.mustGet(name);
    if (condition === undefined) {
      delete guest.condition;
      delete guest.conditionSince;
    } else if (guest.condition !== condition) {
      guest.condition = condition;
      guest.conditionSince = this.opts.clock().toISOString();
    }
  }

  /** A runner's seed files (what its guest would find under corral/), undefined when it has none. */
  seedFiles(name: string): Promise<Record<string, string> | undefined> {
    return this.seeds.read(name);
  }

  /** Test and demo hook: the runner's scratch dir when host scripts are on. */
  scriptDir(name: string): string | undefined {
    return this.scripts?.guestDir(name);
  }

  /** Events from this backend's own state changes, delivered after the change (never inside a call). */
  watchEvents(sink: GuestEventSink): GuestEventStream {
    this.sinks.add(sink);
    return { close: async () => void this.sinks.delete(sink) };
  }

  private emit(guest: string, kind: GuestEventKind, detail: string): void {
    if (this.sinks.size === 0) return;
    const event = { guest, kind, detail, time: this.opts.clock().toISOString() };
    queueMicrotask(() => {
      for (const sink of this.sinks) sink.onEvent(event);
    });
  }

  snapshot(): MemoryState {
    return {
      guests: [...this.guests.values()].map((g) => structuredClone(g)),
      backing: Object.fromEntries(this.backing),
    };
  }

  disks(): string[] {
    return [...this.guests.values()].flatMap((g) => g.disks).sort();
  }

  guestNames(): string[] {
    return [...this.guests.keys()].sort();
  }

  async observe(): Promise<Observation> {
    this.enter('observe');
    const changed = this.advanceBuilds();
    const raws: RawGuest[] = [...this.guests.values()].map((g) => ({
      name: g.name,
      state: g.state,
      meta: g.meta ? { ok: true, meta: { ...g.meta } } : { ok: false, reason: UNRECOGNIZED.noMeta },
      ...(g.verdict ? { verdict: g.verdict } : {}),
      ...(g.state === 'running' && g.condition ? { condition: g.condition } : {}),
      ...(g.state === 'running' && g.conditionSince ? { conditionSince: g.conditionSince } : {}),
    }));
    if (changed) await this.persist();
    return classify(this.opts.prefix, raws);
  }

  async startBuild(req: BuildRequest): Promise<void> {
    this.enter('startBuild');
    if (this.guests.has(req.name)) throw new GuestExistsError(req.name);
    const disk = `templates/${req.profile.name}@${req.meta.gen}.qcow2`;
    this.backing.set(disk, req.baseImage);
    const finishAt = new Date(this.opts.clock().getTime() + (this.opts.buildMs ?? 0)).toISOString();
    const outcome = this.opts.outcome?.(req.profile.name) ?? 'succeed';
    this.guests.set(req.name, {
      name: req.name,
      state: 'running',
      meta: { ...req.meta },
      finishAt,
      outcome,
      disks: [disk, `seeds/${req.name}.iso`],
      console: ['booting'],
    });
    this.emit(req.name, 'defined', 'Added');
    this.emit(req.name, 'started', 'Booted');
    await this.persist();
  }

  async checkBuild(name: string): Promise<BuildCheck> {
    this.enter('checkBuild');
    if (this.advanceBuilds()) await this.persist();
    const guest = this.guests.get(name);
    if (!guest) return { done: true, verdict: { ok: false, reason: 'guest vanished' } };
    if (guest.state === 'running') return { done: false };
    return { done: true, verdict: guest.verdict ?? { ok: false, reason: 'no verdict' } };
  }

  async promote(rebuild: string, template: string): Promise<void> {
    this.enter('promote');
    const guest = this.mustGet(rebuild);
    if (guest.state !== 'shutoff') throw new Error(`cannot rename ${rebuild}: it is ${guest.state}, not shut off`);
    if (this.guests.has(template)) throw new GuestExistsError(template);
    this.guests.delete(rebuild);
    // Only the guest is renamed; disks are named by generation and stay where they are.
    this.guests.set(template, { ...guest, name: template, disks: guest.disks.filter((d) => !d.startsWith('seeds/')) });
    this.emit(rebuild, 'renamed', 'Renamed');
    this.emit(template, 'renamed', 'Renamed');
    await this.persist();
  }

  async createRunner(req: RunnerRequest): Promise<void> {
    this.enter('createRunner');
    const template = this.mustGet(req.template);
    if (template.state !== 'shutoff')
      throw new Error(`template ${req.template} is ${template.state}; templates stay shut off`);
    if (this.guests.has(req.name)) throw new GuestExistsError(req.name);
    if (req.seedFiles) await this.seeds.write(req.name, req.seedFiles);
    const disk = `runners/${req.name}.qcow2`;
    const templateDisk = template.disks.find((d) => d.startsWith('templates/'));
    if (templateDisk) this.backing.set(disk, templateDisk);
    this.guests.set(req.name, {
      name: req.name,
      state: 'running',
      meta: { ...req.meta },
      disks: req.seedFiles ? [disk, `seeds/${req.name}.iso`] : [disk],
      console: [
        `corral-runner: ${req.template}`,
        `corral-runner: name ${req.name}; corral/ files: ${
          Object.keys(req.seedFiles ?? {})
            .sort()
            .join(' ') || '(none)'
        }`,
      ],
    });
    this.emit(req.name, 'defined', 'Added');
    this.emit(req.name, 'started', 'Booted');
    await this.persist();
  }

  async destroy(name: string): Promise<void> {
    this.enter('destroy');
    const guest = this.guests.get(name);
    if (!guest) return;
    for (const disk of guest.disks) {
      const user = [...this.backing].find(([d, b]) => b === disk && !guest.disks.includes(d));
      if (user) throw new Error(`refusing to delete ${disk}: it still backs ${user[0]}`);
    }
    for (const disk of guest.disks) this.backing.delete(disk);
    this.guests.delete(name);
    await this.seeds.remove(name);
    await this.scripts?.remove(name);
    if (guest.state === 'running') this.emit(name, 'stopped', 'Destroyed');
    this.emit(name, 'undefined', 'Removed');
    await this.persist();
  }

  /** With host scripts on: the runner is running. Without: an error saying how to turn them on. */
  async canRunScripts(name: string): Promise<boolean> {
    if (!this.scripts) throw new Error(NO_SCRIPTS);
    return this.guests.get(name)?.state === 'running';
  }

  async runScript(name: string, script: string, onOutput: (chunk: Buffer) => void, opts?: ScriptOptions) {
    if (!this.scripts) throw new Error(NO_SCRIPTS);
    if (this.guests.get(name)?.state !== 'running') throw new Error(`${name} is not running`);
    return this.scripts.run(name, script, onOutput, opts);
  }

  async consoleLog(name: string): Promise<string | undefined> {
    return this.guests.get(name)?.console.join('\n');
  }

  async setAside(rebuild: string, failed: string): Promise<void> {
    const guest = this.mustGet(rebuild);
    if (this.guests.has(failed)) throw new Error(`cannot set ${rebuild} aside: ${failed} exists`);
    this.guests.delete(rebuild);
    this.guests.set(failed, { ...guest, name: failed, state: guest.state === 'running' ? 'shutoff' : guest.state });
    await this.persist();
  }

  async diskChain(name: string): Promise<string[]> {
    const disk = this.guests.get(name)?.disks.find((d) => !d.startsWith('seeds/'));
    return disk ? this.chainOf(disk) : [];
  }

  async filesInUse(): Promise<Set<string>> {
    const used = new Set<string>();
    for (const g of this.guests.values()) for (const d of g.disks) for (const f of this.chainOf(d)) used.add(f);
    return used;
  }

  private chainOf(disk: string): string[] {
    const chain = [disk];
    for (let next = this.backing.get(disk); next !== undefined && !chain.includes(next); next = this.backing.get(next))
      chain.push(next);
    return chain;
  }

  /** Finishes builds whose time has come; true when anything changed. */
  private advanceBuilds(): boolean {
    const now = this.opts.clock().getTime();
    let changed = false;
    for (const guest of this.guests.values()) {
      if (!finishBuildIfDue(guest, now)) continue;
      changed = true;
      this.emit(
        guest.name,
        guest.state === 'crashed' ? 'crashed' : 'stopped',
        guest.state === 'crashed' ? 'Crashed' : 'Shutdown',
      );
    }
    return changed;
  }

  private enter(method: Method): void {
    this.calls[method]++;
    const failure = this.failures.find((f) => f.method === method && f.remaining > 0);
    if (failure) {
      failure.remaining--;
      throw new TransientError(failure.message);
    }
  }

  private mustGet(name: string): MemoryGuest {
    const guest = this.guests.get(name);
    if (!guest) throw new NoSuchGuestError(name);
    return guest;
  }

  /** Saves run one after another, each taking the snapshot when it starts, so the last write is the newest state. */
  private persist(): Promise<void> {
    const save = this.opts.save;
    if (!save) return Promise.resolve();
    const next = this.saving.then(() => save(this.snapshot()));
    this.saving = next.catch(() => undefined);
    return next;
  }
}
