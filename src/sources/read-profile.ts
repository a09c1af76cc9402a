import { readdir } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { Problem } from '../errors.js';
import { readYamlMapping } from '../config/read-yaml.js';
import { schemaProblems, type Validators } from '../config/schema.js';
import { PROFILE_NAME } from './profile-name.js';
import { checkDuration, MEMORY_MIB_RANGE, parseMemoryMiB } from '../util/duration.js';
import { showBytes, utf8Name } from '../util/escape.js';
import type { BaseSpec, CiSpec, CompiledProfile, GuestNetwork, GuestSpec } from './view.js';
import { DEFAULT_GITHUB_API } from './ci-defaults.js';
import { confine } from './confine.js';
import { baseUrlProblem, fileNameOf } from './base-url.js';
import { parseSize } from '../util/size.js';
import { formatReference, parseReference } from '../oci/reference.js';

export const PROFILE_FILE = 'profile.yaml';

/** A profile as read from one source, before merging and hashing. Paths are absolute. */
export interface ReadProfile extends Omit<CompiledProfile, 'overrides' | 'baseVersion' | 'inputs' | 'inputsHash'> {
  override: boolean;
  /** Every file that goes into the image (base, boot files, provision files), absolute and sorted. */
  files: string[];
}

export type ReadResult =
  | { kind: 'profile'; profile: ReadProfile }
  | { kind: 'mask'; name: string; file: string }
  | { kind: 'invalid'; problems: Problem[] };

export function profileNameProblem(name: string): string | undefined {
  if (PROFILE_NAME.test(name)) return undefined;
  return `invalid profile name "${name.length > 70 ? `${name.slice(0, 64)}…` : name}": use 1-63 characters of a-z, 0-9, "-" and "_", starting with a letter or digit`;
}

interface RawProfile {
  runners: number;
  base?: { file?: string; url?: string; sha256?: string; checksums?: string; oci?: string };
  guest?: {
    cpus?: number;
    memory?: number | string;
    xml?: string;
    kernel?: string;
    initrd?: string;
    cmdline?: string;
    network?: GuestNetwork;
    disk?: string;
  };
  template?: { oci: string };
  publish?: { oci: string };
  provision?: { dir?: string; entry?: string; timeout?: number | string };
  rebuild?: { maxAge?: number | string; onBaseUpdate?: boolean };
  rollout?: { drainTimeout?: number | string };
  labels?: Record<string, string>;
  ci?: RawCi;
  override?: boolean;
  mask?: boolean;
}

interface RawCi {
  github?: {
    api?: string;
    owner?: string;
    repo?: string;
    org?: string;
    runnerGroupId?: number;
    labels?: string[];
    tokenFile?: string;
    app?: { appId: number; installationId: number; privateKeyFile: string };
  };
  gitlab?: { buildsDir?: string; cacheDir?: string };
  hook?: { register?: string; deregister?: string; timeout?: number | string };
}

export async function readProfile(
  source: string,
  dir: string,
  name: string,
  validators: Validators,
): Promise<ReadResult> {
  const file = join(dir, PROFILE_FILE);
  const invalid = (problems: Problem[]): ReadResult => ({ kind: 'invalid', problems });
  const nameProblem = profileNameProblem(name);
  if (nameProblem) return invalid([{ file: dir, severity: 'error', message: nameProblem }]);
  const read = await readYamlMapping(file);
  if (!read.ok) return invalid(read.problems);
  if (read.value.mask === true) {
    const extra = Object.keys(read.value).filter((k) => k !== 'mask');
    if (extra.length > 0)
      return invalid([
        { file, where: `/${extra[0]}`, severity: 'error', message: 'a masking profile holds only "mask: true"' },
      ]);
    return { kind: 'mask', name, file };
  }
  if (!validators.profile(read.value)) return invalid(schemaProblems(file, validators.profile.errors));
  const raw = read.value as unknown as RawProfile;
  const problems: Problem[] = [];
  const error = (where: string, message: string) => problems.push({ file, where, severity: 'error', message });
  const path = async (
    where: string,
    reference: string | undefined,
    root = dir,
    expect: 'file' | 'dir' = 'file',
  ): Promise<string | undefined> => {
    if (reference === undefined) return undefined;
    const confined = await confine(root, reference, expect);
    if (!confined.ok) error(where, confined.message);
    return confined.ok ? confined.path : undefined;
  };

  // What every profile carries, whatever it runs: where it came from and how many runners it wants.
  const identity = { name, source, dir, file, override: raw.override === true, runners: raw.runners };
  const publish = raw.publish ? ociRef('/publish/oci', raw.publish.oci, error, true) : undefined;
  if (raw.template) {
    const follower = readFollower(raw, identity, error);
    if (problems.length > 0 || !follower) return invalid(problems);
    return { kind: 'profile', profile: follower };
  }
  if (!raw.base) {
    error('', 'needs "base" (what to build on) or "template" (a pushed template to run)');
    return invalid(problems);
  }
  const base = await readBase(raw.base, error, path);
  const memoryMiB = parseMemoryMiB(raw.guest?.memory ?? 512);
  const { min, max } = MEMORY_MIB_RANGE;
  if (memoryMiB === undefined || memoryMiB < min || memoryMiB > max)
    error(
      '/guest/memory',
      `${memoryMiB === undefined ? 'not a memory size' : 'out of range'}: ${JSON.stringify(raw.guest?.memory)} (use e.g. 512 or 2G; ${min} MiB to ${max / 1048576} TiB)`,
    );
  const guest: GuestSpec = { cpus: raw.guest?.cpus ?? 1, memoryMiB: memoryMiB ?? 0 };
  for (const key of ['xml', 'kernel', 'initrd'] as const) {
    const resolved = await path(`/guest/${key}`, raw.guest?.[key]);
    if (resolved) guest[key] = resolved;
  }
  if (raw.guest?.cmdline !== undefined) guest.cmdline = raw.guest.cmdline;
  if (raw.guest?.network !== undefined && raw.guest.network !== 'user') guest.network = raw.guest.network;
  if (raw.guest?.disk !== undefined) {
    const bytes = parseSize(raw.guest.disk);
    if (bytes === undefined) error('/guest/disk', `not a disk size: ${JSON.stringify(raw.guest.disk)} (use e.g. 40G)`);
    else guest.diskBytes = bytes;
  }
  if ((guest.kernel === undefined) !== (guest.initrd === undefined) && problems.length === 0) {
    error('/guest', 'direct kernel boot needs both "kernel" and "initrd"');
  }

  const provisionDir = await path('/provision/dir', raw.provision?.dir ?? 'provision', dir, 'dir');
  const provisionFiles: string[] = [];
  let entry = raw.provision?.entry;
  if (provisionDir && entry === undefined) {
    // The rule: provision.sh when there is one; else a cloud-init dir (user-data) needs no entry.
    const has = async (f: string) => (await confine(provisionDir, f, 'file')).ok;
    if (await has('provision.sh')) entry = 'provision.sh';
    else if (!(await has('user-data')))
      error(
        '/provision',
        `${relative(dir, provisionDir) || '.'} has neither provision.sh nor a cloud-init user-data: add one, or name the script in provision.entry`,
      );
  }
  if (provisionDir) {
    if (raw.provision?.entry !== undefined) await path('/provision/entry', raw.provision.entry, provisionDir);
    const listed = await listFiles(provisionDir);
    for (const bad of listed.rejected) error('/provision/dir', bad);
    for (const entryPath of listed.files) {
      const confined = await path('/provision/dir', relative(dir, entryPath));
      if (confined) provisionFiles.push(confined);
    }
  }
  const timeout = checkDuration(raw.provision?.timeout ?? '30m', PROFILE_RANGES.timeout);
  if ('message' in timeout) error('/provision/timeout', timeout.message);
  const timeoutSeconds = 'seconds' in timeout ? timeout.seconds : undefined;
  const maxAge =
    raw.rebuild?.maxAge === undefined ? undefined : checkDuration(raw.rebuild.maxAge, PROFILE_RANGES.maxAge);
  if (maxAge && 'message' in maxAge) error('/rebuild/maxAge', maxAge.message);
  const maxAgeSeconds = maxAge && 'seconds' in maxAge ? maxAge.seconds : undefined;
  const drain =
    raw.rollout?.drainTimeout === undefined
      ? undefined
      : checkDuration(raw.rollout.drainTimeout, PROFILE_RANGES.drainTimeout);
  if (drain && 'message' in drain) error('/rollout/drainTimeout', drain.message);
  const drainTimeoutSeconds = drain && 'seconds' in drain ? drain.seconds : undefined;

  const ci = raw.ci ? readCi(raw.ci, dir, error) : undefined;

  if (problems.length > 0 || !base || !provisionDir) return invalid(problems);
  return {
    kind: 'profile',
    profile: {
      ...identity,
      base,
      guest,
      provision: { dir: provisionDir, ...(entry !== undefined ? { entry } : {}), timeoutSeconds: timeoutSeconds ?? 0 },
      rebuild: {
        ...(maxAgeSeconds ? { maxAgeSeconds } : {}),
        ...(raw.rebuild?.onBaseUpdate === false ? { onBaseUpdate: false as const } : {}),
      },
      ...(drainTimeoutSeconds ? { rollout: { drainTimeoutSeconds } } : {}),
      labels: raw.labels ?? {},
      ...(ci ? { ci } : {}),
      ...(publish ? { publish: { oci: publish } } : {}),
      files: [
        ...new Set([
          base.kind === 'file' ? base.file : undefined,
          guest.xml,
          guest.kernel,
          guest.initrd,
          ...provisionFiles,
        ]),
      ]
        .filter((f): f is string => f !== undefined)
        .sort(),
    },
  };
}

/** A profile that runs a pushed template: no base, no provisioning, nothing to build. */
function readFollower(
  raw: RawProfile,
  identity: Pick<ReadProfile, 'name' | 'source' | 'dir' | 'file' | 'override' | 'runners'>,
  error: (where: string, message: string) => void,
): ReadProfile | undefined {
  for (const key of ['base', 'provision', 'guest', 'rebuild', 'publish'] as const)
    if (raw[key] !== undefined)
      error(`/${key}`, `"${key}" has no meaning with "template": the pushed template brings its own`);
  const ref = ociRef('/template/oci', raw.template!.oci, error, false);
  if (!ref) return undefined;
  return {
    ...identity,
    base: { kind: 'template', ref },
    guest: { cpus: 1, memoryMiB: 0 },
    provision: { dir: identity.dir, entry: '', timeoutSeconds: 1800 },
    rebuild: {},
    labels: raw.labels ?? {},
    template: { oci: ref },
    files: [],
  };
}

function ociRef(
  where: string,
  text: string,
  error: (where: string, message: string) => void,
  needTag: boolean,
): string | undefined {
  try {
    const ref = parseReference(text);
    if (needTag && ref.digest) {
      error(where, 'publish to a tag, not a digest');
      return undefined;
    }
    return formatReference(ref);
  } catch (err) {
    error(where, (err as Error).message);
    return undefined;
  }
}

/** Bounds of a profile's durations (seconds): a build needs a second at least and a week at most. */
export const PROFILE_RANGES = {
  timeout: { min: 1, max: 7 * 86400 },
  maxAge: { min: 60, max: 366 * 86400 },
  drainTimeout: { min: 1, max: 30 * 86400 },
};

/**
 * Every file of the provision dir. What cannot go onto a seed disk is rejected by name: FIFOs,
 * sockets and devices (reading one would hang or make no sense), and names that are not UTF-8.
 */
async function listFiles(dir: string): Promise<{ files: string[]; rejected: string[] }> {
  const files: string[] = [];
  const rejected: string[] = [];
  // By hand rather than `recursive: true`: only byte names tell a non-UTF-8 name from a missing file.
  const walk = async (at: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(at, { withFileTypes: true, encoding: 'buffer' });
    } catch (error) {
      rejected.push(
        `cannot read ${relative(dir, at) || '.'} (${(error as NodeJS.ErrnoException).code ?? String(error)})`,
      );
      return;
    }
    for (const e of entries) {
      const name = utf8Name(e.name);
      if (name === undefined) {
        rejected.push(`a name that is not valid UTF-8: ${relative(dir, join(at, showBytes(e.name)))} (rename it)`);
        continue;
      }
      const path = join(at, name);
      const kind = e.isFIFO()
        ? 'a FIFO'
        : e.isSocket()
          ? 'a socket'
          : e.isBlockDevice() || e.isCharacterDevice()
            ? 'a device'
            : undefined;
      if (kind) rejected.push(`${kind} cannot go onto the seed disk: ${relative(dir, path)}`);
      else if (e.isDirectory()) await walk(path);
      else if (e.isFile() || e.isSymbolicLink()) files.push(path);
    }
  };
  await walk(dir);
  return { files: files.sort(), rejected };
}

async function readBase(
  raw: NonNullable<RawProfile['base']>,
  error: (where: string, message: string) => void,
  path: (where: string, reference: string | undefined) => Promise<string | undefined>,
): Promise<BaseSpec | undefined> {
  const kinds = (['file', 'url', 'oci'] as const).filter((k) => raw[k] !== undefined);
  if (kinds.length !== 1) {
    error('/base', `needs exactly one of "file", "url" or "oci"${kinds.length ? ` (found ${kinds.join(', ')})` : ''}`);
    return undefined;
  }
  if (raw.oci !== undefined) {
    // A disk pushed with `corral push ./base.qcow2 <ref>`; the tag is resolved before every pass.
    for (const key of ['sha256', 'checksums'] as const)
      if (raw[key] !== undefined)
        error(`/base/${key}`, `"${key}" goes with "url", not "oci" (an OCI image is verified by its digest)`);
    const ref = ociRef('/base/oci', raw.oci, error, false);
    return ref ? { kind: 'oci', ref } : undefined;
  }
  if (raw.file !== undefined) {
    for (const key of ['sha256', 'checksums'] as const)
      if (raw[key] !== undefined) error(`/base/${key}`, `"${key}" goes with "url", not "file"`);
    const file = await path('/base/file', raw.file);
    return file ? { kind: 'file', file } : undefined;
  }
  const url = raw.url as string;
  const urlProblem = baseUrlProblem(url);
  if (urlProblem) error('/base/url', urlProblem);
  if ((raw.sha256 === undefined) === (raw.checksums === undefined)) {
    error(
      '/base',
      'base.url needs exactly one of "sha256" (a pinned digest) or "checksums" (the URL of a checksum list)',
    );
    return undefined;
  }
  if (raw.sha256 !== undefined) return urlProblem ? undefined : { kind: 'url', url, sha256: raw.sha256 };
  const checksums = raw.checksums as string;
  const listProblem = baseUrlProblem(checksums);
  if (listProblem) error('/base/checksums', listProblem);
  if (urlProblem || listProblem) return undefined;
  if (fileNameOf(url) === '') error('/base/url', `has no file name to look up in the checksum list: ${url}`);
  return fileNameOf(url) === '' ? undefined : { kind: 'checksums', url, checksums };
}

/** The `ci` section, with the either/or rules the schema cannot state clearly. */
function readCi(raw: RawCi, dir: string, error: (where: string, message: string) => void): CiSpec | undefined {
  // Secret files live outside the profile (and out of git): absolute, or relative to the profile dir.
  const secret = (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  if (raw.github) {
    const g = raw.github;
    const repoScope = g.owner !== undefined || g.repo !== undefined;
    if (repoScope === (g.org !== undefined) || (repoScope && (g.owner === undefined || g.repo === undefined))) {
      error('/ci/github', 'needs "owner" and "repo" (a repository\'s runners) or "org" (an organization\'s), not both');
      return undefined;
    }
    if ((g.tokenFile === undefined) === (g.app === undefined)) {
      error('/ci/github', 'needs exactly one of "tokenFile" or "app" to authenticate');
      return undefined;
    }
    return {
      kind: 'github',
      api: g.api ?? DEFAULT_GITHUB_API,
      scope: g.org !== undefined ? { kind: 'org', org: g.org } : { kind: 'repo', owner: g.owner!, repo: g.repo! },
      runnerGroupId: g.runnerGroupId ?? 1,
      labels: g.labels ?? [],
      auth: g.app
        ? { kind: 'app', ...g.app, privateKeyFile: secret(g.app.privateKeyFile) }
        : { kind: 'token', tokenFile: secret(g.tokenFile!) },
    };
  }
  if (raw.gitlab)
    return { kind: 'gitlab', buildsDir: raw.gitlab.buildsDir ?? '/builds', cacheDir: raw.gitlab.cacheDir ?? '/cache' };
  if (raw.hook) {
    const timeout = checkDuration(raw.hook.timeout ?? 60, { min: 1, max: 3600 });
    if ('message' in timeout) error('/ci/hook/timeout', timeout.message);
    const timeoutSeconds = 'seconds' in timeout ? timeout.seconds : undefined;
    return {
      kind: 'hook',
      ...(raw.hook.register ? { register: raw.hook.register } : {}),
      ...(raw.hook.deregister ? { deregister: raw.hook.deregister } : {}),
      timeoutSeconds: timeoutSeconds ?? 60,
    };
  }
  return undefined;
}
