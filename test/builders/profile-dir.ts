/**
 * Fixture builders for profile sources and host configs on a real temp dir.
 *
 *   const root = await tempRoot();
 *   await aProfileDir(join(root, 'src1'), 'web').runners(2).baseFile('base.img', 'v1')
 *     .provisionFile('provision.sh', 'echo hi').yaml({ labels: { os: 'debian' } }).write();
 *   const config = await aHostConfig(root).source('one', 'src1').write();
 *   const result = await corral(['validate', '--config', config]);
 *
 * Every profile gets a working default (runners 1, base.img, provision/provision.sh) so a test
 * only spells out what it is about.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadHostConfig, type HostConfig } from '../../src/config/host-config.js';
import { createValidators, type Validators } from '../../src/config/schema.js';
import { compileSources, type Compilation } from '../../src/sources/compile.js';
import { FileDigests } from '../../src/sources/inputs.js';
import { refreshView, type Refreshed } from '../../src/reconcile/refresh-view.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = join(REPO, 'bin/corral.js');

type Yaml = Record<string, unknown>;

/** A fresh temp dir; removed by `cleanup()` (call it from afterEach/afterAll). */
export async function tempRoot(prefix = 'corral-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  created.push(dir);
  return dir;
}
const created: string[] = [];
export async function cleanup(): Promise<void> {
  await Promise.all(created.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

export function aProfileDir(sourceDir: string, name: string): ProfileDirBuilder {
  return new ProfileDirBuilder(sourceDir, name);
}

export interface WrittenProfile {
  name: string;
  dir: string;
  /** The profile.yaml. */
  file: string;
}

export class ProfileDirBuilder {
  private doc: Yaml;
  private text: string | undefined;
  private readonly files = new Map<string, string | Buffer>();
  private readonly links = new Map<string, string>();

  constructor(
    private readonly sourceDir: string,
    private readonly name: string,
  ) {
    this.doc = { runners: 1, base: { file: 'base.img' } };
    this.files.set('base.img', `base image of ${name}`);
    this.files.set('provision/provision.sh', '#!/bin/sh\necho provisioned\n');
  }

  get dir(): string {
    return join(this.sourceDir, this.name);
  }

  runners(n: number): this {
    this.doc.runners = n;
    return this;
  }

  /** Sets `base.file` and writes the file. */
  baseFile(path: string, bytes: string | Buffer): this {
    if (path !== 'base.img') this.files.delete('base.img');
    this.doc.base = { file: path };
    return this.file(path, bytes);
  }

  /** A file in the provision dir (`provision/<path>`). */
  provisionFile(path: string, bytes: string | Buffer): this {
    return this.file(join('provision', path), bytes);
  }

  /** Direct kernel boot: sets `guest.kernel`/`guest.initrd` and writes both files. */
  kernel(bytes: string | Buffer = 'kernel', initrd: string | Buffer = 'initrd'): this {
    this.yaml({ guest: { kernel: 'vmlinuz', initrd: 'initrd.img' } });
    return this.file('vmlinuz', bytes).file('initrd.img', initrd);
  }

  labels(labels: Record<string, string>): this {
    return this.yaml({ labels });
  }

  override(): this {
    return this.yaml({ override: true });
  }

  /** A masking profile: only `mask: true`, no files. */
  mask(): this {
    this.doc = { mask: true };
    this.files.clear();
    return this;
  }

  /** Deep-merges keys into profile.yaml; a value of `undefined` removes the key. */
  yaml(extra: Yaml): this {
    this.doc = merge(this.doc, extra);
    return this;
  }

  /** profile.yaml verbatim (broken YAML, comments, key order): replaces the generated text. */
  rawYaml(text: string): this {
    this.text = text;
    return this;
  }

  /** Any file inside the profile dir (path relative to it). */
  file(path: string, bytes: string | Buffer): this {
    this.files.set(path, bytes);
    return this;
  }

  /** Drops a default file (e.g. 'provision/provision.sh'). */
  withoutFile(path: string): this {
    this.files.delete(path);
    return this;
  }

  /** A symlink at `path` (relative to the profile dir) pointing at `target` (as given). */
  symlink(path: string, target: string): this {
    this.links.set(path, target);
    return this;
  }

  async write(): Promise<WrittenProfile> {
    await mkdir(this.dir, { recursive: true });
    for (const [path, bytes] of this.files) {
      await mkdir(dirname(join(this.dir, path)), { recursive: true });
      await writeFile(join(this.dir, path), bytes);
    }
    for (const [path, target] of this.links) {
      await mkdir(dirname(join(this.dir, path)), { recursive: true });
      await symlink(target, join(this.dir, path));
    }
    const file = join(this.dir, 'profile.yaml');
    await writeFile(file, this.text ?? stringify(this.doc));
    return { name: this.name, dir: this.dir, file };
  }
}

/** A host config in `root/corral.yaml`: built-in profiles off, state in `root/state`. */
export function aHostConfig(root: string): HostConfigBuilder {
  return new HostConfigBuilder(root);
}

export class HostConfigBuilder {
  private doc: Yaml = { builtinProfiles: false, stateDir: 'state', hypervisor: 'memory' };
  private readonly sources: Yaml[] = [];
  private text: string | undefined;

  constructor(private readonly root: string) {}

  get file(): string {
    return join(this.root, 'corral.yaml');
  }

  get stateDir(): string {
    return resolve(this.root, String(this.doc.stateDir));
  }

  /** A `{name, path}` source; relative paths are relative to the config file's dir. */
  source(name: string, path: string): this {
    this.sources.push({ name, path });
    return this;
  }

  glob(name: string, glob: string): this {
    this.sources.push({ name, glob });
    return this;
  }

  builtinProfiles(on = true): this {
    return this.set({ builtinProfiles: on });
  }

  /** Deep-merges keys into the config; `undefined` removes one. */
  set(extra: Yaml): this {
    this.doc = merge(this.doc, extra);
    return this;
  }

  /** The config file verbatim. */
  raw(text: string): this {
    this.text = text;
    return this;
  }

  /** Writes corral.yaml and returns its path. */
  async write(): Promise<string> {
    await mkdir(this.root, { recursive: true });
    const doc = this.sources.length > 0 ? { ...this.doc, sources: this.sources } : this.doc;
    await writeFile(this.file, this.text ?? stringify(doc));
    return this.file;
  }
}

function merge(base: Yaml, extra: Yaml): Yaml {
  const out: Yaml = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const old = out[key];
    if (value === undefined) delete out[key];
    else if (isMap(value) && isMap(old)) out[key] = merge(old, value);
    else out[key] = value;
  }
  return out;
}

function isMap(v: unknown): v is Yaml {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !Buffer.isBuffer(v);
}

export interface CliResult {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (`node bin/corral.js ...`); never rejects. Logs at warn unless told otherwise. */
export function corral(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, CORRAL_LOG_LEVEL: 'warn', CORRAL_CONFIG: '', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (exitCode) => resolvePromise({ exitCode, stdout, stderr }));
  });
}

/**
 * Runs the CLI's `main()` in this process: the same argument parsing, config loading, commands and
 * error reporting as the binary, without paying a Node start-up per call. Use `corral()` where the
 * real process matters (exit status, stack traces on stderr, npx).
 */
export async function corralInProcess(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  // Imported on first use: the CLI pulls in every command, which test files without CLI calls need not load.
  const { main } = await import('../../src/cli/main.js');
  let stdout = '';
  let stderr = '';
  const exitCode = await main(args, {
    io: { out: (t) => void (stdout += t), err: (t) => void (stderr += t) },
    env: { CORRAL_LOG_LEVEL: 'warn', ...opts.env },
    cwd: opts.cwd ?? REPO,
    stderrIsTty: false,
  });
  return { exitCode, stdout, stderr };
}

/** Lines that look like a JavaScript stack frame. */
export function stackLines(text: string): string[] {
  return text.split('\n').filter((l) => /^\s{4}at /.test(l));
}

/** The generation `state/current` points at, or undefined when there is none. */
export async function currentTarget(stateDir: string): Promise<string | undefined> {
  return readlink(join(stateDir, 'current')).catch(() => undefined);
}

/** Loads a host config file the way the CLI does (relative paths against its dir). */
export async function loadConfig(file: string): Promise<{ config: HostConfig; validators: Validators }> {
  const validators = createValidators();
  const config = await loadHostConfig(file, { validators, env: {}, cwd: dirname(file) });
  return { config, validators };
}

/** Compiles every source of a host config in-process (like `corral validate`). */
export async function compileConfig(file: string): Promise<Compilation> {
  const { config, validators } = await loadConfig(file);
  return compileSources(config.sources, { validators, digests: new FileDigests() });
}

/** Compiles and stores the view in-process (like `corral compile`, without the lock). */
export async function refreshConfig(file: string, now = new Date()): Promise<Refreshed> {
  const { config, validators } = await loadConfig(file);
  return refreshView(config, { validators, digests: new FileDigests(), now });
}
