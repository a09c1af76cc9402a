/**
 * The devices corral adds to every guest it defines. Disks carry a `<serial>` tag so a runner
 * clone can find the root and seed disks in the template's XML without guessing from paths.
 */
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

/** A file-backed channel: the guest's verdict stays readable after the guest is gone. */
export function statusChannel(file: string): XmlNode {
  return { '@_type': 'file', source: { '@_path': file }, target: { '@_type': 'virtio', '@_name': STATUS_CHANNEL } };
}

export function serialLog(file: string): XmlNode {
  return { '@_type': 'file', source: { '@_path': file }, target: { '@_port': '0' } };
}

export function diskSerial(disk: XmlNode): string | undefined {
  return text(disk['serial']);
}

export function isStatusChannel(ch: XmlNode): boolean {
  const target = ch['target'];
  return isNode(target) && attr(target, 'name') === STATUS_CHANNEL;
}

/** Points the guest's status channel and serial console at these files (replacing any others). */
export function setStatusAndConsole(doc: DomainDoc, status: string, consoleLog: string): void {
  const dev = child(doc.domain, 'devices');
  dev['channel'] = [...children(dev, 'channel').filter((c) => !isStatusChannel(c)), statusChannel(status)];
  dev['serial'] = [serialLog(consoleLog)];
  // libvirt derives <console> from the first serial; a stale one would point at the old log.
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

/** The file behind the guest's org.corral.status channel, if it has one. */
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
