/**
 * Parsing and writing libvirt domain XML with fast-xml-parser: attributes as `@_name`, text as
 * `#text`, and every child of <devices> as an array, so edits are plain object operations.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

export type XmlNode = Record<string, unknown>;

/** Elements that may repeat: always arrays, so code never has to guess. */
function isArrayPath(jpath: string): boolean {
  return jpath.startsWith('domain.devices.') && jpath.split('.').length === 3;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  isArray: (_tag, jpath) => isArrayPath(String(jpath)),
});

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  format: true,
  indentBy: '  ',
  suppressEmptyNode: true,
});

export interface DomainDoc {
  domain: XmlNode;
}

export function parseDomainXml(xml: string): DomainDoc {
  const parsed = parser.parse(xml) as XmlNode;
  const domain = parsed['domain'];
  if (!isNode(domain)) throw new Error('not a libvirt domain XML document (no <domain> root)');
  return { domain };
}

export function buildDomainXml(doc: DomainDoc): string {
  return builder.build({ domain: doc.domain }) as string;
}

export function isNode(v: unknown): v is XmlNode {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The child element `key`, created empty when absent (or when it was an empty tag like `<acpi/>`). */
export function child(node: XmlNode, key: string): XmlNode {
  const v = node[key];
  if (isNode(v)) return v;
  const created: XmlNode = {};
  node[key] = created;
  return created;
}

/** The repeated child elements `key` as a mutable array owned by `node`. */
export function children(node: XmlNode, key: string): XmlNode[] {
  const v = node[key];
  if (Array.isArray(v)) return v as XmlNode[];
  const arr: XmlNode[] = v === undefined ? [] : [isNode(v) ? v : {}];
  node[key] = arr;
  return arr;
}

export function devices(doc: DomainDoc): XmlNode {
  return child(doc.domain, 'devices');
}

/** Text content of a leaf element, whether or not it carries attributes. */
export function text(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isNode(v) && typeof v['#text'] === 'string') return v['#text'];
  return undefined;
}

export function attr(node: XmlNode | undefined, name: string): string | undefined {
  const v = node?.[`@_${name}`];
  return typeof v === 'string' ? v : undefined;
}

export function domainName(doc: DomainDoc): string | undefined {
  return text(doc.domain['name']);
}

/** `<source file=…>` or `<source path=…>` of a device element. */
export function sourcePath(device: XmlNode): string | undefined {
  const src = device['source'];
  if (!isNode(src)) return undefined;
  return attr(src, 'file') ?? attr(src, 'path');
}
