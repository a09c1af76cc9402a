import type {
  BuildCheck,
  BuildRequest,
  GuestState,
  Hypervisor,
  Observation,
  ObservedGuest,
  RunnerRequest,
} from '../hypervisor.js';
import { hasPrefix, parseName } from '../names.js';
import { TransientError } from '../../errors.js';
import {
  finishBuildIfDue,
  type BuildOutcome,
  type MemoryGuest,
  type MemoryState,
  type Method,
} from './memory-guest.js';

export type { BuildOutcome, MemoryGuest, MemoryState, Method } from './memory-guest.js';

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
}

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

  constructor(private readonly opts: MemoryOptions) {
    for (const g of opts.initial?.guests ?? []) this.guests.set(g.name, g);
    for (const [disk, base] of Object.entries(opts.initial?.backing ?? {})) this.backing.set(disk, base);
  }

  /** The next `times` calls of `method` fail with a transient error. */
  failNext(method: Method, times = 1, message = `injected ${method} failure`): void {
    this.failures.push({ method, remaining: times, message });
  }

  /** Test and demo hook: a guest not owned by corral, or a runner whose job finished. */
  addForeignGuest(name: string, state: GuestState = 'running'): void {
    this.guests.set(name, { name, state, disks: [], console: [] });
  }

  setState(name: string, state: GuestState): void {
    const guest = this.mustGet(name);
    guest.state = state;
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
    const result: Observation = { guests: [], unrecognized: [] };
    for (const g of this.guests.values()) {
      if (!hasPrefix(this.opts.prefix, g.name)) continue;
      const parsed = parseName(this.opts.prefix, g.name);
      if (!parsed || !g.meta) {
        result.unrecognized.push({
          name: g.name,
          reason: parsed ? 'no corral metadata' : 'name does not follow corral naming',
        });
        continue;
      }
      const observed: ObservedGuest = {
        name: g.name,
        role: parsed.role,
        profile: parsed.profile,
        state: g.state,
        meta: { ...g.meta },
      };
      if (parsed.role === 'runner') observed.index = parsed.index;
      else observed.gen = parsed.gen;
      if (parsed.role === 'rebuild' && g.state !== 'running')
        observed.verdict = g.verdict ?? { ok: false, reason: 'no verdict' };
      result.guests.push(observed);
    }
    if (changed) await this.persist();
    return result;
  }

  async startBuild(req: BuildRequest): Promise<void> {
    this.enter('startBuild');
    if (this.guests.has(req.name)) throw new TransientError(`guest ${req.name} already exists`);
    const disk = `templates/${req.profile.name}@${req.meta.gen}.qcow2`;
    this.backing.set(disk, `base/${req.profile.baseVersion}`);
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
    if (this.guests.has(template)) throw new Error(`cannot rename ${rebuild}: ${template} exists`);
    this.guests.delete(rebuild);
    // Only the guest is renamed; disks are named by generation and stay where they are.
    this.guests.set(template, { ...guest, name: template, disks: guest.disks.filter((d) => !d.startsWith('seeds/')) });
    await this.persist();
  }

  async createRunner(req: RunnerRequest): Promise<void> {
    this.enter('createRunner');
    const template = this.mustGet(req.template);
    if (template.state !== 'shutoff')
      throw new Error(`template ${req.template} is ${template.state}; templates stay shut off`);
    if (this.guests.has(req.name)) throw new TransientError(`guest ${req.name} already exists`);
    const disk = `runners/${req.name}.qcow2`;
    const templateDisk = template.disks.find((d) => d.startsWith('templates/'));
    if (templateDisk) this.backing.set(disk, templateDisk);
    this.guests.set(req.name, {
      name: req.name,
      state: 'running',
      meta: { ...req.meta },
      disks: [disk],
      console: [`corral-runner: ${req.template}`],
    });
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
    await this.persist();
  }

  async consoleLog(name: string): Promise<string | undefined> {
    return this.guests.get(name)?.console.join('\n');
  }

  /** Finishes builds whose time has come; true when anything changed. */
  private advanceBuilds(): boolean {
    const now = this.opts.clock().getTime();
    let changed = false;
    for (const guest of this.guests.values()) changed = finishBuildIfDue(guest, now) || changed;
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
    if (!guest) throw new TransientError(`no guest named ${name}`);
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
