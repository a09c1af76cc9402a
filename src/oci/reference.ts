/**
 * OCI references: `host[:port]/repository[:tag][@sha256:<hex>]`. The registry host is always
 * spelled out (corral has no default registry), and loopback registries are reached over plain
 * HTTP, every other one over HTTPS.
 */
import { ConfigError } from '../errors.js';

export interface Reference {
  /** `host[:port]` as written. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
export const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function parseReference(text: string): Reference {
  const bad = (why: string): never => {
    throw new ConfigError(`not an OCI reference "${text}": ${why}`);
  };
  let rest = text.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) bad('the digest must be sha256:<64 hex>');
  }
  const slash = rest.indexOf('/');
  if (slash < 0) return bad('name the registry host, e.g. registry.example:5000/team/image:tag');
  const registry = rest.slice(0, slash);
  if (!/^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-fA-F:]+\](?::\d{1,5})?$/.test(registry))
    bad(`"${registry}" is not a registry host[:port]`);
  if (!registry.includes('.') && !registry.includes(':') && registry !== 'localhost')
    bad(`"${registry}" does not look like a registry host (it needs a dot, a port or to be localhost)`);
  let path = rest.slice(slash + 1);
  let tag: string | undefined;
  const colon = path.lastIndexOf(':');
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) bad(`"${tag}" is not a valid tag`);
  }
  if (path === '' || !path.split('/').every((c) => REPO_COMPONENT.test(c)))
    bad(`"${path}" is not a valid repository name (lower-case letters, digits and separators)`);
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: path, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** The same repository pinned to one manifest digest (the tag dropped). */
export function pinned(ref: Reference, digest: string): Reference {
  return { registry: ref.registry, repository: ref.repository, digest };
}

export function isLoopback(registry: string): boolean {
  const host = registry.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function registryBaseUrl(registry: string): string {
  return `${isLoopback(registry) ? 'http' : 'https'}://${registry}`;
}
