/**
 * A runner's domain XML, derived from its template's: same hardware and metadata, its own name,
 * disk, seed (its identity and CI registration), status and console sockets, a QEMU guest agent
 * channel; libvirt assigns a fresh uuid and MACs.
 */
import { attr, buildDomainXml, child, children, isNode, parseDomainXml, type XmlNode } from './domain-xml.js';
import {
  diskSerial,
  ROOT_SERIAL,
  SEED_SERIAL,
  seedDisk,
  setStatusAndConsole,
  type GuestXmlInput,
} from './devices-xml.js';
import { AGENT_CHANNEL } from './guest-agent.js';
import { setMeta } from './metadata.js';

/** A runner needs nothing beyond what every corral domain is given (its seed is its own, seed.ts). */
export type RunnerXmlInput = GuestXmlInput;

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
  dev['disk'] = [root, seedDisk(input.seed), ...disks.filter((d) => d !== root)];
  for (const nic of children(dev, 'interface')) delete (nic as XmlNode)['mac'];
  setStatusAndConsole(doc, input, input.owner);
  // The QEMU guest agent's channel (libvirt picks the socket path): how `corral gitlab run` reaches the guest.
  const channels = children(dev, 'channel');
  if (!channels.some((c) => isNode(c['target']) && attr(c['target'], 'name') === AGENT_CHANNEL)) {
    dev['channel'] = [...channels, { '@_type': 'unix', target: { '@_type': 'virtio', '@_name': AGENT_CHANNEL } }];
  }
  return buildDomainXml(doc);
}
