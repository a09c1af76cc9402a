/**
 * corral's <metadata> element, in its own namespace so libvirt keeps it through define, rename
 * and dumpxml, and other tools' metadata is left alone.
 */
import type { GuestMeta, MetaResult } from '../hypervisor.js';
import { XMLParser } from 'fast-xml-parser';
import { isNode, text, type DomainDoc, type XmlNode } from './domain-xml.js';

export const CORRAL_XMLNS = 'https://corral.dev/xmlns/guest/1';
const PREFIX = 'corral';
const REQUIRED = ['profile', 'gen', 'inputsHash', 'baseVersion', 'createdAt'] as const;

/** Replaces corral's metadata (any prefix libvirt chose) and keeps everyone else's. */
export function setMeta(doc: DomainDoc, meta: GuestMeta): void {
  const existing = doc.domain['metadata'];
  const metadata: XmlNode = isNode(existing) ? existing : {};
  const found = findOurs(metadata);
  if (found) delete metadata[found.key];
  const el: XmlNode = { [`@_xmlns:${PREFIX}`]: CORRAL_XMLNS };
  for (const field of REQUIRED) el[`${PREFIX}:${field}`] = meta[field];
  if (meta.owner !== undefined) el[`${PREFIX}:owner`] = meta.owner;
  if (meta.manifest !== undefined) el[`${PREFIX}:manifest`] = meta.manifest;
  metadata[`${PREFIX}:guest`] = el;
  doc.domain['metadata'] = metadata;
}

export type { MetaResult } from '../hypervisor.js';

export function readMeta(doc: DomainDoc): MetaResult {
  const metadata = doc.domain['metadata'];
  const found = isNode(metadata) ? findOurs(metadata) : undefined;
  if (!found) return { ok: false, reason: 'no corral metadata' };
  return fromFields((field) => text(found.node[found.prefix + field]));
}

const smallParser = new XMLParser({ ignoreAttributes: true, parseTagValue: false, trimValues: true });

/**
 * Reads the output of `virsh metadata --uri <ours>`: just our element, without prefix. Parsing
 * that instead of the whole domain XML keeps a pass over 1,000 guests cheap (docs/design.md, "Observation").
 */
export function parseMetaElement(xml: string): MetaResult {
  if (xml.trim() === '') return { ok: false, reason: 'no corral metadata' };
  let guest: unknown;
  try {
    guest = (smallParser.parse(xml) as XmlNode)['guest'];
  } catch (err) {
    return { ok: false, reason: `unreadable corral metadata: ${(err as Error).message}` };
  }
  if (!isNode(guest)) return { ok: false, reason: 'no corral metadata' };
  return fromFields((field) => text(guest[field]));
}

function fromFields(get: (field: string) => string | undefined): MetaResult {
  const missing = REQUIRED.filter((f) => !get(f));
  if (missing.length > 0) return { ok: false, reason: `corral metadata lacks ${missing.join(', ')}` };
  const meta: GuestMeta = {
    profile: get('profile')!,
    gen: get('gen')!,
    inputsHash: get('inputsHash')!,
    baseVersion: get('baseVersion')!,
    createdAt: get('createdAt')!,
  };
  const owner = get('owner');
  if (owner) meta.owner = owner;
  const manifest = get('manifest');
  if (manifest) meta.manifest = manifest;
  return { ok: true, meta };
}

/** Our element is the `guest` child whose namespace URI is ours, whatever prefix it carries. */
function findOurs(metadata: XmlNode): { key: string; prefix: string; node: XmlNode } | undefined {
  for (const [key, value] of Object.entries(metadata)) {
    if (!isNode(value)) continue;
    const colon = key.indexOf(':');
    const local = colon < 0 ? key : key.slice(colon + 1);
    if (local !== 'guest') continue;
    const xmlnsAttr = colon < 0 ? '@_xmlns' : `@_xmlns:${key.slice(0, colon)}`;
    if (value[xmlnsAttr] !== CORRAL_XMLNS) continue;
    return { key, prefix: colon < 0 ? '' : key.slice(0, colon + 1), node: value };
  }
  return undefined;
}
