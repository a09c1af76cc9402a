/**
 * The rebuild guest's domain XML: generated from the profile's resources, or the profile's own
 * XML template with corral's parts (name, disks, channel, console, metadata) filled in.
 */
import { readFile } from 'node:fs/promises';
import type { CompiledProfile, GuestNetwork } from '../../sources/view.js';
import { buildDomainXml, child, children, parseDomainXml, type DomainDoc, type XmlNode } from './domain-xml.js';
import {
  diskSerial,
  rootDisk,
  seedDisk,
  setLifecycle,
  setStatusAndConsole,
  type GuestXmlInput,
  ROOT_SERIAL,
  SEED_SERIAL,
} from './devices-xml.js';
import { setMeta } from './metadata.js';

export interface BuildXmlInput extends GuestXmlInput {
  profile: CompiledProfile;
  /** Kernel and initrd copies owned by this generation (direct kernel boot only). */
  kernel?: string;
  initrd?: string;
  /** `qemu` (TCG) unless the host has working KVM. */
  domainType: string;
}

export async function rebuildDomainXml(input: BuildXmlInput): Promise<string> {
  const doc = input.profile.guest.xml
    ? parseDomainXml(await readFile(input.profile.guest.xml, 'utf8'))
    : generated(input);
  fillCorralParts(doc, input);
  return buildDomainXml(doc);
}

function generated(input: BuildXmlInput): DomainDoc {
  const g = input.profile.guest;
  const os: XmlNode = { type: { '#text': 'hvm', '@_arch': 'x86_64' } };
  if (input.kernel) {
    os['kernel'] = input.kernel;
    if (input.initrd) os['initrd'] = input.initrd;
    if (g.cmdline) os['cmdline'] = g.cmdline;
  } else {
    os['boot'] = { '@_dev': 'hd' };
  }
  return {
    domain: {
      '@_type': input.domainType,
      name: input.name,
      memory: { '#text': String(g.memoryMiB), '@_unit': 'MiB' },
      vcpu: String(g.cpus),
      os,
      features: { acpi: '' },
      on_reboot: 'restart',
      devices: {
        interface: [networkInterface(g.network)],
        // No balloon: the guest does not need one and it costs a PCI slot and a driver.
        memballoon: [{ '@_model': 'none' }],
      },
    },
  };
}

/** `guest.network`: user-mode (no inbound), a libvirt network, or a host bridge. */
export function networkInterface(network: GuestNetwork | undefined): XmlNode {
  const model = { '@_type': 'virtio' };
  if (!network || network === 'user') return { '@_type': 'user', model };
  if ('bridge' in network) return { '@_type': 'bridge', source: { '@_bridge': network.bridge }, model };
  return { '@_type': 'network', source: { '@_network': network.network }, model };
}

function fillCorralParts(doc: DomainDoc, input: BuildXmlInput): void {
  doc.domain['name'] = input.name;
  delete doc.domain['uuid'];
  setMeta(doc, input.meta);
  setLifecycle(doc);
  const dev = child(doc.domain, 'devices');
  const ours = new Set([ROOT_SERIAL, SEED_SERIAL]);
  const kept = children(dev, 'disk').filter((d) => {
    const target = d['target'] as XmlNode | undefined;
    const t = target?.['@_dev'];
    return !ours.has(diskSerial(d) ?? '') && t !== 'vda' && t !== 'vdb';
  });
  dev['disk'] = [rootDisk(input.disk), seedDisk(input.seed), ...kept];
  setStatusAndConsole(doc, input, input.owner);
}
