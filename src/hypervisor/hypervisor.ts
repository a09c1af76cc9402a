/**
 * The backend-neutral hypervisor interface. Each guest is treated as a self-contained object
 * (its own configuration and disks), so a UTM-like backend can implement it as well as libvirt.
 * Nothing backend-specific (XML, URIs, file layout) appears here.
 */
import type { CompiledProfile } from '../sources/view.js';
import type { Role } from './names.js';

export type GuestState = 'running' | 'shutoff' | 'crashed' | 'paused' | 'other';

/** What corral records on every guest it creates (libvirt keeps it in a <metadata> element). */
export interface GuestMeta {
  profile: string;
  /** The template generation: its own for rebuild/template guests, the one it was cloned from for runners. */
  gen: string;
  inputsHash: string;
  baseVersion: string;
  /** ISO time the guest was created. */
  createdAt: string;
  /** Lock token of the process that started a rebuild; a rebuild whose owner no longer holds the lock is an orphan. */
  owner?: string;
  /** `sha256:<hex>` identity digest of the build's provenance manifest (docs/images.md). */
  manifest?: string;
}

export type Verdict = { ok: true } | { ok: false; reason: string };

/**
 * What a running runner said on its status channel: nothing yet (`booting`), `ready` (or `idle`
 * after a job), or `busy` with a job. Only a ready runner counts as capacity.
 */
export type RunnerCondition = 'booting' | 'ready' | 'busy';
/** A guest's corral metadata as a backend read it, or why it could not. */
export type MetaResult = { ok: true; meta: GuestMeta } | { ok: false; reason: string };

export interface ObservedGuest {
  name: string;
  role: Role;
  profile: string;
  /** rebuild/template: the generation in the name. */
  gen?: string;
  /** runner: the index in the name. */
  index?: number;
  state: GuestState;
  meta: GuestMeta;
  /** Rebuild guests that are no longer running: what the status channel said (crash = failed). */
  verdict?: Verdict;
  /** Running runners: what the guest last said (absent when the backend cannot tell: counts as ready). */
  condition?: RunnerCondition;
  /** Running runners: ISO time the condition was last seen to change, when the backend knows it. */
  conditionSince?: string;
}

export interface Observation {
  guests: ObservedGuest[];
  /** Guests with our prefix whose name or metadata do not parse: reported, never touched. */
  unrecognized: { name: string; reason: string }[];
}

export interface BuildRequest {
  /** Rebuild guest name, `<prefix>-rebuild-<profile>@<gen>`. */
  name: string;
  profile: CompiledProfile;
  meta: GuestMeta;
  /** The cached base image (a standalone qcow2) the build's disk overlays. */
  baseImage: string;
}

export type BuildCheck = { done: false } | { done: true; verdict: Verdict };

export interface RunnerRequest {
  template: string;
  name: string;
  profile: CompiledProfile;
  meta: GuestMeta;
  /**
   * Files for the runner's own seed, under `corral/` (name → content): CI registration material
   * such as `github-jitconfig`. Secrets: the backend keeps them readable by the guest only.
   */
  seedFiles?: Record<string, string>;
}

/** Guest lifecycle changes, as every backend reports them. */
export type GuestEventKind = 'defined' | 'undefined' | 'renamed' | 'started' | 'stopped' | 'crashed';

export interface GuestEvent {
  guest: string;
  kind: GuestEventKind;
  /** The backend's own word for it (libvirt's event detail: `Destroyed`, `Shutdown`, …). */
  detail: string;
  /** ISO time the backend stamped on it. */
  time: string;
}

export interface GuestEventSink {
  onEvent(event: GuestEvent): void;
  /**
   * The stream was down and is up again: events may have been lost meanwhile, so look again.
   * (Events only trigger passes; every pass re-observes everything, so a lost event costs at most this.)
   */
  onResumed?(): void;
}

export interface GuestEventStream {
  close(): Promise<void>;
}

/** A template as it leaves the host: its files and a domain description free of host specifics. */
export interface TemplateExport {
  meta: GuestMeta;
  /** Domain XML without uuid, MACs, file paths or corral metadata. */
  domainXml: string;
  /** In dependency order: a disk's backing file comes before the disk. */
  files: { name: string; path: string; format?: string; backing?: string }[];
}

/** A template arriving from elsewhere: staged files (moved, not copied) and its description. */
export interface TemplateImport {
  /** The template guest name to create. */
  name: string;
  meta: GuestMeta;
  domainXml: string;
  /** Staged file per name (`disk`, `base`, `kernel`, `initrd`); `base` may be absent when the host has it. */
  files: Record<string, string>;
  /** True when the disk is an overlay on the base. */
  backing: boolean;
  /** Where a carried base came from, for its descriptor in the base cache (docs/images.md). */
  baseOrigin?: { reference: string; cachedAt: string; digest?: string };
}

export interface ScriptOptions {
  /** Aborted: stop the script (process group: SIGTERM, then SIGKILL after `killGraceMs`). */
  signal?: AbortSignal;
  /** Between SIGTERM and SIGKILL (default 5 s: gitlab-runner itself waits longer before killing us). */
  killGraceMs?: number;
}

export interface Hypervisor {
  readonly kind: string;
  /** Every guest carrying our prefix, in as few backend calls as possible (libvirt: one virsh process). */
  observe(): Promise<Observation>;
  /** Creates the rebuild guest (disk on the base, seed from the provision dir, metadata) and starts it. */
  startBuild(req: BuildRequest): Promise<void>;
  /** One look at a rebuild guest: still running, or finished with a verdict. A vanished or crashed guest is a failed verdict. */
  checkBuild(name: string): Promise<BuildCheck>;
  /** Renames a shut-off, successful rebuild guest to its template name; nothing else changes. */
  promote(rebuild: string, template: string): Promise<void>;
  /** Creates a copy-on-write clone of a template and starts it; resolves once it is running. */
  createRunner(req: RunnerRequest): Promise<void>;
  /** Stops the guest if needed and removes it with every disk it owns. A missing guest is not an error. */
  destroy(name: string): Promise<void>;
  /** Serial console output of a guest, when the backend keeps it. */
  consoleLog(name: string): Promise<string | undefined>;
  /**
   * Stops reading guests' status and console channels, for a process that gives up the state-dir
   * lock but lives on (`corral serve` between passes): the next lock holder reads them. Backends
   * without channels of their own leave it out.
   */
  releaseChannels?(): Promise<void>;
  /**
   * Lifecycle events of every guest (not only ours: callers filter by prefix) until closed. A
   * backend whose stream breaks reconnects by itself and says so once in the log; meanwhile only
   * the resync timer looks again.
   */
  watchEvents(sink: GuestEventSink): GuestEventStream;
  /** Renames a finished, failed rebuild out of the way (`--keep-failed`), stopping it first; never promoted. */
  setAside(rebuild: string, failed: string): Promise<void>;
  /** The guest's root disk and every image under it, top first ([] when unknown). */
  diskChain(name: string): Promise<string[]>;
  /**
   * Every file any defined guest uses, ours or not, following every disk's backing chain: what
   * garbage collection must never remove.
   */
  filesInUse(): Promise<Set<string>>;
  /** Whether a script can run in the running guest now (libvirt: its QEMU guest agent answers). */
  canRunScripts?(name: string): Promise<boolean>;
  /**
   * Runs a script inside the guest, streaming its output; resolves with its exit status. When
   * `signal` aborts (the CI job was cancelled or timed out), the script's whole process group in
   * the guest gets SIGTERM, then SIGKILL after a grace period, and the call resolves with the
   * status it ended with (128 + the signal when it was killed).
   */
  runScript?(name: string, script: string, onOutput: (chunk: Buffer) => void, opts?: ScriptOptions): Promise<number>;
  /** Backends that can move templates between hosts (corral push/pull) implement these. */
  templates?: {
    export(name: string): Promise<TemplateExport>;
    /** True when the base of this version is already on the host (its layers need not be pulled). */
    hasBase(baseVersion: string): Promise<boolean>;
    /** Where staged files must be written so that landing them is a rename. */
    stagingDir(key: string): string;
    import(req: TemplateImport): Promise<void>;
  };
}
