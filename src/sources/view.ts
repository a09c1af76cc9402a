/** The compiled view: what every downstream step reads. Produced by compile(), stored as view.json. */

/**
 * Where a profile's base image comes from (docs/images.md):
 * - `file`: a file inside the profile dir; its sha256 is the version, known at compile time.
 * - `url` + `sha256`: pinned; the version is the pinned digest.
 * - `url` + `checksums`: a checksum list (SHA256SUMS style) re-read before every pass; the line
 *   for the URL's file name is the version, so a new upstream image is a new version.
 * - `oci`: an image in a registry, versioned by its manifest digest (docs/oci-format.md).
 * URLs are `http(s)://` or `file://`.
 */
export type BaseSpec =
  | { kind: 'file'; file: string }
  | { kind: 'url'; url: string; sha256: string }
  | { kind: 'checksums'; url: string; checksums: string }
  /**
   * A disk image pushed to a registry (`corral push ./base.qcow2 <ref>`): the tag is resolved to its
   * manifest digest before every pass (one HEAD), and that digest is the version; pulled by the build.
   */
  | { kind: 'oci'; ref: string }
  /** Only for profiles that follow a pushed template (`template: {oci}`): they build nothing, so no base. */
  | { kind: 'template'; ref: string };

/** How a guest reaches the network: `user` (QEMU user-mode, the default), a libvirt network or a host bridge. */
export type GuestNetwork = 'user' | { network: string } | { bridge: string };

export interface GuestSpec {
  cpus: number;
  memoryMiB: number;
  /** Absolute path of a libvirt domain XML template, when the profile ships one. */
  xml?: string;
  /** Direct kernel boot (absolute paths inside the profile dir). */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  network?: GuestNetwork;
  /** Virtual size of the template disk (`guest.disk: 40G`); absent: the base image's size. */
  diskBytes?: number;
}

export interface ProvisionSpec {
  /** Absolute path of the provisioning dir; its files go onto the seed disk. */
  dir: string;
  /** Entry script, relative to dir; absent for a cloud-init dir (`user-data`), which cloud-init runs itself. */
  entry?: string;
  timeoutSeconds: number;
}

export interface InputFile {
  /** Path relative to the profile dir. */
  path: string;
  sha256: string;
  /** Present when any execute bit is set: `chmod +x` on a script is a change to the image. */
  executable?: true;
  /** Permission bits as octal text (`0755`), for the manifest; not hashed (the execute bit is). */
  mode?: string;
}

/** How CI systems use a profile's runners (`ci:` in profile.yaml). Secret files are named, never read, here. */
export type CiSpec =
  | {
      kind: 'github';
      api: string;
      scope: { kind: 'repo'; owner: string; repo: string } | { kind: 'org'; org: string };
      runnerGroupId: number;
      labels: string[];
      auth:
        | { kind: 'token'; tokenFile: string }
        | { kind: 'app'; appId: number; installationId: number; privateKeyFile: string };
    }
  | { kind: 'gitlab'; buildsDir: string; cacheDir: string }
  | { kind: 'hook'; register?: string; deregister?: string; timeoutSeconds: number };

export interface CompiledProfile {
  name: string;
  /** Name of the source the profile came from. */
  source: string;
  /** Absolute profile dir and profile.yaml. */
  dir: string;
  file: string;
  /** The profile.yaml this one replaced with `override: true`, if any. */
  overrides?: string;
  runners: number;
  base: BaseSpec;
  /**
   * Base version: `sha256:<hex>` of the base image bytes. Known at compile time for `file` and
   * pinned `url`; '' for `checksums` until the pass resolves it (src/images/resolve.ts).
   */
  baseVersion: string;
  guest: GuestSpec;
  provision: ProvisionSpec;
  /** `onBaseUpdate: false`: a new upstream base version (checksums) does not rebuild. */
  rebuild: { maxAgeSeconds?: number; onBaseUpdate?: false };
  labels: Record<string, string>;
  /** How runners are replaced when a new template lands. */
  rollout?: { drainTimeoutSeconds: number };
  /** Absent: the runners are not registered with any CI system. */
  ci?: CiSpec;
  /** Runners come from a template pushed to this OCI reference; nothing is built (docs/oci-format.md). */
  template?: { oci: string; /** Set each pass from the registry: the digest the tag points at. */ digest?: string };
  /** Newly promoted templates are pushed to this OCI reference. */
  publish?: { oci: string };
  inputs: InputFile[];
  /** sha256 over everything that goes into the image (not the runner count). */
  inputsHash: string;
}

export interface MaskedProfile {
  name: string;
  /** The masking profile.yaml and the one it hides (if any). */
  file: string;
  masks?: string;
}

export interface CompiledView {
  format_version: 1;
  /** Content hash of the view (profiles, masks), independent of generation and time. */
  hash: string;
  generation: number;
  compiledAt: string;
  profiles: CompiledProfile[];
  masked: MaskedProfile[];
}
