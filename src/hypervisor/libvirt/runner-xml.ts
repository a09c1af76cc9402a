/**
 * A runner's domain XML, derived from its template's: same hardware and metadata, its own name,
 * disk, status file and console log; libvirt assigns a fresh uuid and MAC addresses.
 */
import type { GuestMeta } from '../hypervisor.js';
import { buildDomainXml, child, children, parseDomainXml, type XmlNode } from './domain-xml.js';
import { diskSerial, ROOT_SERIAL, SEED_SERIAL, setStatusAndConsole } from './devices-xml.js';
import { setMeta } from './metadata.js';

export interface RunnerXmlInput {
  name: string;
  meta: GuestMeta;
  disk: string;
  status: string;
  consoleLog: string;
}

export function runnerDomainXml(templateXml: string, input: RunnerXmlInput): string {
  const doc = parseDomainXml(templateXml);
  doc.domain['name'] = input.name;
  delete doc.domain['uuid'];
  setMeta(doc, input.meta);
  const dev = child(doc.domain, 'devices');
  const disks = children(dev, 'disk').filter((d) => diskSerial(d) !== SEED_SERIAL);
  const root = disks.find((d) => diskSerial(d) === ROOT_SERIAL);
  if (!root) throw new Error(`template XML has no disk tagged <serial>${ROOT_SERIAL}</serial>`);
  root['source'] = { '@_file': input.disk };
  // The overlay's header names its backing file; a copied chain from the template would be wrong.
  delete root['backingStore'];
  dev['disk'] = disks;
  for (const nic of children(dev, 'interface')) delete (nic as XmlNode)['mac'];
  setStatusAndConsole(doc, input.status, input.consoleLog);
  return buildDomainXml(doc);
}
