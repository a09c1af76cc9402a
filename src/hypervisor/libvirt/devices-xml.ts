/**
 * The devices corral adds to every guest it defines. Disks carry a `<serial>` tag so a runner
 * clone can find the root and seed disks in the template's XML without guessing from paths.
 */
import type { GuestMeta } from '../hypervisor.js';
import { attr, child, children, isNode, text, type DomainDoc, type XmlNode } from './domain-xml.js';

export const STATUS_CHANNEL = 'org.corral.status';
export const ROOT_SERIAL = 'corral-root';
export const SEED_SERIAL = 'corral-seed';

export function rootDisk(file: string): XmlNode {
  return {
    '@_type': 'file',
    '@_device': 'disk',
    driver: { '@_name': 'qemu', '@_type': 'qcow2' },
    source: { '@_file': file },
    target: { '@_dev': 'vda', '@_bus': 'virtio' },
    serial: ROOT_SERIAL,
  };
}

export function seedDisk(file: string): XmlNode {
  return {
    '@_type': 'file',
    '@_device': 'disk',
    driver: { '@_name': 'qemu', '@_type': 'raw' },
    source: { '@_file': file },
    target: { '@_dev': 'vdb', '@_bus': 'virtio' },
    readonly: '',
    serial: SEED_SERIAL,
  };
}

/** Who may connect to a guest's channel sockets: corral's own uid and gid. */
export interface SocketOwner {
  uid: number;
  gid: number;
}

/** What every corral domain is given, rebuild guest or runner: its name, metadata, disks and sockets. */
export interface GuestXmlInput {
  name: string;
  meta: GuestMeta;
  disk: string;
  /** The cidata seed: the build's, or the runner's own (seed.ts). */
  seed: string;
  statusSocket: string;
  consoleSocket: string;
  owner: SocketOwner;
}

export function currentOwner(): SocketOwner {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
}

/**
 * A unix socket libvirt creates and hands to QEMU, labelled with corral's uid:gid so corral can
 * connect whatever user qemu runs as (see channels.ts for why not a file).
 */
function boundSocket(file: string, owner: SocketOwner): XmlNode {
  return {
    '@_mode': 'bind',
    '@_path': file,
    seclabel: { '@_model': 'dac', '@_relabel': 'yes', label: `+${owner.uid}:+${owner.gid}` },
  };
}

export function statusChannel(socket: string, owner: SocketOwner): XmlNode {
  return {
    '@_type': 'unix',
    source: boundSocket(socket, owner),
    target: { '@_type': 'virtio', '@_name': STATUS_CHANNEL },
  };
}

export function serialConsole(socket: string, owner: SocketOwner): XmlNode {
  return { '@_type': 'unix', source: boundSocket(socket, owner), target: { '@_port': '0' } };
}

export function diskSerial(disk: XmlNode): string | undefined {
  return text(disk['serial']);
}

export function isStatusChannel(ch: XmlNode): boolean {
  const target = ch['target'];
  return isNode(target) && attr(target, 'name') === STATUS_CHANNEL;
}

/** Points the guest's status channel and serial console at these sockets (replacing any others). */
export function setStatusAndConsole(
  doc: DomainDoc,
  sockets: { statusSocket: string; consoleSocket: string },
  owner: SocketOwner,
): void {
  const dev = child(doc.domain, 'devices');
  dev['channel'] = [
    ...children(dev, 'channel').filter((c) => !isStatusChannel(c)),
    statusChannel(sockets.statusSocket, owner),
  ];
  dev['serial'] = [serialConsole(sockets.consoleSocket, owner)];
  // libvirt derives <console> from the first serial; a stale one would point at the old socket.
  delete dev['console'];
}

/** Crash and power-off behaviour corral relies on (docs/design.md, "Provisioning contract" and "Tests"). */
export function setLifecycle(doc: DomainDoc): void {
  const features = child(doc.domain, 'features');
  if (features['acpi'] === undefined) features['acpi'] = '';
  doc.domain['on_poweroff'] = 'destroy';
  doc.domain['on_crash'] = 'destroy';
  const dev = child(doc.domain, 'devices');
  const panics = children(dev, 'panic');
  if (!panics.some((p) => attr(p, 'model') === 'isa')) panics.push({ '@_model': 'isa' });
}

/** The file or socket behind the guest's org.corral.status channel, if it has one. */
export function statusFileOf(doc: DomainDoc): string | undefined {
  const dev = doc.domain['devices'];
  if (!isNode(dev)) return undefined;
  const ch = children(dev, 'channel').find(isStatusChannel);
  const src = ch?.['source'];
  return isNode(src) ? attr(src, 'path') : undefined;
}

/** The root disk's file (the disk tagged corral-root). */
export function rootDiskOf(doc: DomainDoc): string | undefined {
  const dev = doc.domain['devices'];
  if (!isNode(dev)) return undefined;
  const disk = children(dev, 'disk').find((d) => diskSerial(d) === ROOT_SERIAL);
  const src = disk?.['source'];
  return isNode(src) ? attr(src, 'file') : undefined;
}
