import type {
  GuestMeta,
  GuestState,
  ObservedGuest,
  RunnerCondition,
  Verdict,
} from '../../src/hypervisor/hypervisor.js';
import { rebuildName, runnerName, templateName } from '../../src/hypervisor/names.js';
import type { CompiledProfile } from '../../src/sources/view.js';
import type { Facts, Policy } from '../../src/plan/types.js';

export const PREFIX = 'ci';
export const HASH_A = `sha256:${'a'.repeat(64)}`;
export const HASH_B = `sha256:${'b'.repeat(64)}`;

/** A generation stamped at `minutesAgo` before NOW with the hash's first 8 hex. */
export const NOW = new Date('2026-11-24T12:00:00Z');
export function genAt(minutesAgo: number, hash = HASH_A): string {
  const t = new Date(NOW.getTime() - minutesAgo * 60_000)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  return `${t}-${hash.slice(7, 15)}`;
}

export function aProfile(name = 'tiny'): ProfileBuilder {
  return new ProfileBuilder(name);
}

class ProfileBuilder {
  private readonly p: CompiledProfile;
  constructor(name: string) {
    this.p = {
      name,
      source: 'builtin',
      dir: `/profiles/${name}`,
      file: `/profiles/${name}/profile.yaml`,
      runners: 2,
      base: { kind: 'file', file: `/profiles/${name}/base.img` },
      baseVersion: `sha256:${'0'.repeat(64)}`,
      guest: { cpus: 1, memoryMiB: 128 },
      provision: { dir: `/profiles/${name}/provision`, entry: 'provision.sh', timeoutSeconds: 60 },
      rebuild: {},
      labels: {},
      inputs: [],
      inputsHash: HASH_A,
    };
  }
  runners(n: number): this {
    this.p.runners = n;
    return this;
  }
  withHash(hash: string): this {
    this.p.inputsHash = hash;
    return this;
  }
  maxAge(seconds: number): this {
    this.p.rebuild = { maxAgeSeconds: seconds };
    return this;
  }
  /** `template: {oci}`: follows a registry tag; `digest` is what the tag resolved to this pass (none: unresolved). */
  following(oci: string, digest?: string): this {
    this.p.base = { kind: 'template', ref: oci };
    this.p.template = { oci, ...(digest ? { digest } : {}) };
    if (digest) this.p.inputsHash = digest;
    return this;
  }
  publishing(oci: string): this {
    this.p.publish = { oci };
    return this;
  }
  build(): CompiledProfile {
    return structuredClone(this.p);
  }
}

class GuestBuilder {
  private profile = 'tiny';
  private hash = HASH_A;
  private gen = genAt(60);
  private state: GuestState;
  private owner?: string;
  private verdict?: Verdict;
  private index = 1;
  private fromGen?: string;
  private condition?: RunnerCondition;
  private conditionSince?: string | undefined;

  constructor(private readonly role: 'rebuild' | 'template' | 'runner') {
    this.state = role === 'runner' ? 'running' : role === 'template' ? 'shutoff' : 'running';
  }
  forProfile(name: string): this {
    this.profile = name;
    return this;
  }
  withHash(hash: string): this {
    this.hash = hash;
    return this;
  }
  atGen(gen: string): this {
    this.gen = gen;
    return this;
  }
  /** Runner: cloned from the template of this generation. */
  onTemplate(gen: string): this {
    this.fromGen = gen;
    return this;
  }
  index_(n: number): this {
    this.index = n;
    return this;
  }
  inState(state: GuestState): this {
    this.state = state;
    return this;
  }
  ownedBy(token: string): this {
    this.owner = token;
    return this;
  }
  /** What a running runner last said on its status channel, and since when. */
  saying(condition: RunnerCondition, since?: string): this {
    this.condition = condition;
    this.conditionSince = since;
    return this;
  }
  withVerdict(verdict: Verdict): this {
    this.verdict = verdict;
    return this;
  }
  build(): ObservedGuest {
    const gen = this.role === 'runner' ? (this.fromGen ?? this.gen) : this.gen;
    const meta: GuestMeta = {
      profile: this.profile,
      gen,
      inputsHash: this.hash,
      baseVersion: `sha256:${'0'.repeat(64)}`,
      createdAt: '',
      ...(this.owner ? { owner: this.owner } : {}),
    };
    if (this.role === 'runner') {
      return {
        name: runnerName(PREFIX, this.profile, this.index),
        role: 'runner',
        profile: this.profile,
        index: this.index,
        state: this.state,
        meta,
        ...(this.condition ? { condition: this.condition } : {}),
        ...(this.conditionSince ? { conditionSince: this.conditionSince } : {}),
      };
    }
    const name =
      this.role === 'template' ? templateName(PREFIX, this.profile, gen) : rebuildName(PREFIX, this.profile, gen);
    const guest: ObservedGuest = { name, role: this.role, profile: this.profile, gen, state: this.state, meta };
    if (this.role === 'rebuild' && this.state !== 'running')
      guest.verdict = this.verdict ?? { ok: false, reason: 'no verdict' };
    return guest;
  }
}

export const aTemplate = () => new GuestBuilder('template');
export const aRebuild = () => new GuestBuilder('rebuild');
export const aRunner = () => new GuestBuilder('runner');

export function aPolicy(overrides: Partial<Policy> = {}): Policy {
  return { prefix: PREFIX, keepTemplates: 2, surgeFraction: 0.25, concurrency: { builds: 2, clones: 4 }, ...overrides };
}

export function someFacts(overrides: Partial<Facts> = {}): Facts {
  return { backoff: {}, runnerBackoff: {}, absentSources: [], ...overrides };
}
