/** The rebuild guest's XML: generated from resources, or a profile's own template with corral's parts filled in. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rebuildDomainXml, type BuildXmlInput } from '../../../src/hypervisor/libvirt/build-xml.js';
import {
  children,
  parseDomainXml,
  sourcePath,
  text,
  type XmlNode,
} from '../../../src/hypervisor/libvirt/domain-xml.js';
import { readMeta } from '../../../src/hypervisor/libvirt/metadata.js';
import type { CompiledProfile } from '../../../src/sources/view.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'corral-build-xml-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const meta = {
  profile: 'p',
  gen: 'g',
  inputsHash: 'sha256:1',
  baseVersion: 'sha256:2',
  createdAt: '2026-01-01T00:00:00Z',
};

function input(guest: CompiledProfile['guest'], over: Partial<BuildXmlInput> = {}): BuildXmlInput {
  const profile = { name: 'p', guest } as CompiledProfile;
  return {
    name: 'ci-rebuild-p@g',
    profile,
    meta,
    domainType: 'qemu',
    disk: '/i/t/p@g.qcow2',
    seed: '/i/s/p@g.iso',
    statusSocket: '/i/sockets/p@g.status.sock',
    consoleSocket: '/i/sockets/p@g.console.sock',
    owner: { uid: 105, gid: 115 },
    ...over,
  };
}

describe('rebuildDomainXml', () => {
  it('generates a TCG guest with direct kernel boot, ACPI, panic device and corral devices', async () => {
    const xml = await rebuildDomainXml(
      input(
        { cpus: 2, memoryMiB: 256, cmdline: 'console=ttyS0' },
        { kernel: '/i/t/p@g.kernel', initrd: '/i/t/p@g.initrd' },
      ),
    );
    const d = parseDomainXml(xml).domain;
    expect(d['@_type']).toBe('qemu');
    expect(d['memory']).toEqual({ '#text': '256', '@_unit': 'MiB' });
    expect(text(d['vcpu'])).toBe('2');
    expect(d['os']).toMatchObject({ kernel: '/i/t/p@g.kernel', initrd: '/i/t/p@g.initrd', cmdline: 'console=ttyS0' });
    expect(xml).toMatch(/<features>\s*<acpi\/>\s*<\/features>/);
    expect(d['on_poweroff']).toBe('destroy');
    const dev = d['devices'] as XmlNode;
    expect(children(dev, 'disk').map(sourcePath)).toEqual(['/i/t/p@g.qcow2', '/i/s/p@g.iso']);
    expect(children(dev, 'panic')).toEqual([{ '@_model': 'isa' }]);
    expect(xml).toContain('name="org.corral.status"');
    // Channels are sockets libvirt binds and labels with corral's own uid:gid (channels.ts).
    const [channel] = children(dev, 'channel');
    expect(channel).toMatchObject({
      '@_type': 'unix',
      source: {
        '@_mode': 'bind',
        '@_path': '/i/sockets/p@g.status.sock',
        seclabel: { '@_model': 'dac', '@_relabel': 'yes', label: '+105:+115' },
      },
    });
    expect(children(dev, 'serial')[0]).toMatchObject({
      '@_type': 'unix',
      source: { '@_path': '/i/sockets/p@g.console.sock' },
    });
    expect(children(dev, 'interface')).toEqual([{ '@_type': 'user', model: { '@_type': 'virtio' } }]);
    expect(readMeta(parseDomainXml(xml))).toEqual({ ok: true, meta });
  });

  it('puts the guest on the network guest.network names', async () => {
    const nic = async (network: CompiledProfile['guest']['network']) =>
      children(
        parseDomainXml(await rebuildDomainXml(input({ cpus: 1, memoryMiB: 64, ...(network ? { network } : {}) })))
          .domain['devices'] as XmlNode,
        'interface',
      );
    expect(await nic('user')).toEqual([{ '@_type': 'user', model: { '@_type': 'virtio' } }]);
    expect(await nic({ network: 'default' })).toEqual([
      { '@_type': 'network', source: { '@_network': 'default' }, model: { '@_type': 'virtio' } },
    ]);
    expect(await nic({ bridge: 'br0' })).toEqual([
      { '@_type': 'bridge', source: { '@_bridge': 'br0' }, model: { '@_type': 'virtio' } },
    ]);
  });

  it('boots from disk when the profile has no kernel', async () => {
    const d = parseDomainXml(await rebuildDomainXml(input({ cpus: 1, memoryMiB: 64 }))).domain;
    expect(d['os']).toMatchObject({ boot: { '@_dev': 'hd' } });
  });

  it("fills corral's parts into a profile's own XML template and keeps the rest", async () => {
    const file = path.join(dir, 'guest.xml');
    await writeFile(
      file,
      `<domain type='kvm'><name>placeholder</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
        <memory unit='GiB'>4</memory><vcpu>4</vcpu><os><type arch='x86_64'>hvm</type></os>
        <devices>
          <disk type='file' device='disk'><source file='/old/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
          <disk type='file' device='disk'><source file='/data/cache.qcow2'/><target dev='vdc' bus='virtio'/></disk>
          <interface type='network'><source network='ci'/><model type='virtio'/></interface>
          <serial type='pty'/><console type='pty'/>
        </devices></domain>`,
    );
    const xml = await rebuildDomainXml(input({ cpus: 1, memoryMiB: 64, xml: file }));
    const d = parseDomainXml(xml).domain;
    expect(d['@_type']).toBe('kvm');
    expect(d['name']).toBe('ci-rebuild-p@g');
    expect(d['uuid']).toBeUndefined();
    expect(d['memory']).toEqual({ '#text': '4', '@_unit': 'GiB' });
    const dev = d['devices'] as XmlNode;
    expect(children(dev, 'disk').map(sourcePath)).toEqual(['/i/t/p@g.qcow2', '/i/s/p@g.iso', '/data/cache.qcow2']);
    expect(children(dev, 'interface')).toHaveLength(1);
    expect(children(dev, 'serial').map(sourcePath)).toEqual(['/i/sockets/p@g.console.sock']);
    expect(dev['console']).toBeUndefined();
    expect(readMeta(parseDomainXml(xml))).toEqual({ ok: true, meta });
  });
});
