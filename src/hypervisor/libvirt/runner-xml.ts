/**
 * A runner's domain XML, derived from its template's: same hardware and metadata, its own name,
 * disk, status file and console log; libvirt assigns a fresh uuid and MAC addresses.
 */
import type { GuestMeta } from '../hypervisor.js';
import { attr, buildDomainXml, child, children, isNode, parseDomainXml, type XmlNode } from './domain-xml.js';
import { diskSerial, ROOT_SERIAL, SEED_SERIAL, setStatusAndConsole } from './devices-xml.js';
import { AGENT_CHANNEL } from './guest-agent.js';
import { RUNNER_SEED_SERIAL } from './runner-seed.js';
import { setMeta } from './metadata.js';

export interface RunnerXmlInput {
  name: string;
  meta: GuestMeta;
  disk: string;
  status: string;
  consoleLog: string;
  /** The runner's own seed ISO (CI registration material), when it has one. */
  seed?: string;
}

export function runnerDomainXml(templateXml: string, input: RunnerXmlInput): string {
  const doc = parseDomainXml(templateXml);
  doc.domain['name'] = input.name;
  delete doc.domain['uuid'];
  setMeta(doc, input.meta);
  const dev = child(doc.domain, 'devices');
  const disks = children(dev, 'disk').filter(
    (d) => diskSerial(d) !== SEED_SERIAL && diskSerial(d) !== RUNNER_SEED_SERIAL,
  );
  const root = disks.find((d) => diskSerial(d) === ROOT_SERIAL);
  if (!root) throw new Error(`template XML has no disk tagged <serial>${ROOT_SERIAL}</serial>`);
  root['source'] = { '@_file': input.disk };
  // The overlay's header names its backing file; a copied chain from the template would be wrong.
  delete root['backingStore'];
  if (input.seed) {
    disks.push({
      '@_type': 'file',
      '@_device': 'disk',
      driver: { '@_name': 'qemu', '@_type': 'raw' },
      source: { '@_file': input.seed },
      target: { '@_dev': 'vdb', '@_bus': 'virtio' },
      readonly: '',
      serial: RUNNER_SEED_SERIAL,
    });
  }
  dev['disk'] = disks;
  for (const nic of children(dev, 'interface')) delete (nic as XmlNode)['mac'];
  setStatusAndConsole(doc, input.status, input.consoleLog);
  // The QEMU guest agent's channel (libvirt picks the socket path): how `corral gitlab run` reaches the guest.
  const channels = children(dev, 'channel');
  if (!channels.some((c) => isNode(c['target']) && attr(c['target'], 'name') === AGENT_CHANNEL)) {
    dev['channel'] = [...channels, { '@_type': 'unix', target: { '@_type': 'virtio', '@_name': AGENT_CHANNEL } }];
  }
  return buildDomainXml(doc);
}
