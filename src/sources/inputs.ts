import { stat } from 'node:fs/promises';
import { relative } from 'node:path';
import { canonicalJson, sha256, sha256File } from '../util/hash.js';
import type { CompiledProfile, InputFile } from './view.js';
import type { ReadProfile } from './read-profile.js';

/**
 * Remembers file digests by (path, size, mtime, inode) so that `watch` does not rehash a
 * multi-gigabyte base image on every edit of an unrelated file.
 */
export class FileDigests {
  private readonly known = new Map<string, { key: string; digest: string }>();

  async digest(path: string): Promise<string> {
    return (await this.describe(path)).sha256;
  }

  /** The content digest and whether the file is executable (a script's mode changes what a guest can run). */
  async describe(path: string): Promise<{ sha256: string; executable: boolean; mode: string }> {
    const info = await stat(path);
    const executable = (info.mode & 0o111) !== 0;
    const mode = (info.mode & 0o7777).toString(8).padStart(4, '0');
    const key = `${info.size}:${info.mtimeMs}:${info.ino}`;
    const hit = this.known.get(path);
    if (hit?.key === key) return { sha256: hit.digest, executable, mode };
    const digest = await sha256File(path);
    this.known.set(path, { key, digest });
    return { sha256: digest, executable, mode };
  }
}

/** Adds the inputs list, base version and build inputs hash (docs/design.md, "Concepts and naming") to a profile. */
export async function hashInputs(profile: ReadProfile, digests: FileDigests): Promise<CompiledProfile> {
  const rel = (p: string) => relative(profile.dir, p);
  const inputs: InputFile[] = [];
  for (const file of profile.files) {
    const { sha256: digest, executable, mode } = await digests.describe(file);
    inputs.push({ path: rel(file), sha256: digest, ...(executable ? { executable } : {}), mode });
  }
  // `checksums` and tagged `oci` bases are versioned per pass by the resolver, which folds the version into the hash.
  const baseVersion =
    profile.base.kind === 'file'
      ? `sha256:${await digests.digest(profile.base.file)}`
      : profile.base.kind === 'url'
        ? `sha256:${profile.base.sha256}`
        : profile.base.kind === 'oci' && profile.base.ref.includes('@')
          ? profile.base.ref.slice(profile.base.ref.indexOf('@') + 1)
          : '';
  // Paths are hashed relative to the profile dir: moving a profile to another source keeps its images.
  const relative_ = (p: string | undefined) => (p === undefined ? undefined : rel(p));
  const image = {
    base: profile.base.kind === 'file' ? { file: rel(profile.base.file) } : profile.base,
    guest: {
      ...profile.guest,
      xml: relative_(profile.guest.xml),
      kernel: relative_(profile.guest.kernel),
      initrd: relative_(profile.guest.initrd),
    },
    provision: { ...profile.provision, dir: rel(profile.provision.dir) },
    // Whether a new upstream version rebuilds is policy, not an input: toggling it rebuilds nothing.
    rebuild: { ...profile.rebuild, onBaseUpdate: undefined },
  };
  // The mode text is for the manifest; only the execute bit is an input (as it always was).
  const hashed = inputs.map(({ mode: _mode, ...rest }) => rest);
  const inputsHash = `sha256:${sha256(canonicalJson({ image, inputs: hashed, baseVersion }))}`;
  const { override: _override, files: _files, ...rest } = profile;
  return { ...rest, baseVersion, inputs, inputsHash };
}
