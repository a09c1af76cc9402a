/** Pure parts of the libvirt backend: XML edits, metadata, virsh batch output, state parsing. */
import { describe, expect, it } from 'vitest';
import {
  buildDomainXml,
  children,
  parseDomainXml,
  sourcePath,
  type XmlNode,
} from '../../../src/hypervisor/libvirt/domain-xml.js';
import { readMeta, setMeta, CORRAL_XMLNS } from '../../../src/hypervisor/libvirt/metadata.js';
import { runnerDomainXml } from '../../../src/hypervisor/libvirt/runner-xml.js';
import { splitBatch } from '../../../src/hypervisor/libvirt/virsh.js';
import { parseDomstate, parseVerdict } from '../../../src/hypervisor/libvirt/status.js';
import { filesOfDomain } from '../../../src/hypervisor/libvirt/destroy.js';
import { parseDomstats, parseUuidList } from '../../../src/hypervisor/libvirt/domstats.js';
import type { GuestMeta } from '../../../src/hypervisor/hypervisor.js';

const meta: GuestMeta = {
  profile: 'tiny',
  gen: '20260101T000000Z-abcdef01',
  inputsHash: 'sha256:ab',
  baseVersion: 'sha256:cd',
  createdAt: '2026-01-01T00:00:00.000Z',
  owner: 'lock-1',
};

/** Shaped like `virsh dumpxml --inactive` of a promoted template. */
const templateXml = `<domain type='qemu'>
  <name>ci-template-tiny@20260101T000000Z-abcdef01</name>
  <uuid>3ee17275-51cb-40be-b152-ffdabc240df3</uuid>
  <metadata>
    <other:thing xmlns:other="https://example.org/other">keep me</other:thing>
    <c:guest xmlns:c="${CORRAL_XMLNS}">
      <c:profile>tiny</c:profile><c:gen>20260101T000000Z-abcdef01</c:gen><c:inputsHash>sha256:ab</c:inputsHash>
      <c:baseVersion>sha256:cd</c:baseVersion><c:createdAt>2026-01-01T00:00:00.000Z</c:createdAt><c:owner>lock-1</c:owner>
    </c:guest>
  </metadata>
  <memory unit='KiB'>131072</memory>
  <os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type><kernel>/i/templates/tiny@g.kernel</kernel></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='/i/templates/tiny@g.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/i/base/sha256/x.qcow2'/></backingStore>
      <target dev='vda' bus='virtio'/><serial>corral-root</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='/i/seeds/tiny@g.iso'/><target dev='vdb' bus='virtio'/><readonly/><serial>corral-seed</serial>
    </disk>
    <interface type='user'><mac address='52:54:00:12:34:56'/><model type='virtio'/></interface>
    <serial type='file'><source path='/i/logs/tiny@g.console.log'/><target port='0'/></serial>
    <console type='file'><source path='/i/logs/tiny@g.console.log'/><target type='serial' port='0'/></console>
    <channel type='file'><source path='/i/status/tiny@g.status'/><target type='virtio' name='org.corral.status'/></channel>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>`;

describe('metadata', () => {
  it('reads our element whatever prefix libvirt gives it', () => {
    expect(readMeta(parseDomainXml(templateXml))).toEqual({ ok: true, meta });
  });

  it('replaces ours and keeps other namespaces', () => {
    const doc = parseDomainXml(templateXml);
    setMeta(doc, { ...meta, gen: 'other', owner: undefined });
    const back = parseDomainXml(buildDomainXml(doc));
    expect(readMeta(back)).toEqual({ ok: true, meta: { ...meta, gen: 'other', owner: undefined } });
    expect(buildDomainXml(back)).toContain('keep me');
    expect(buildDomainXml(back).match(new RegExp(CORRAL_XMLNS, 'g'))).toHaveLength(1);
  });

  it('reports missing and incomplete metadata', () => {
    expect(readMeta(parseDomainXml('<domain><name>x</name></domain>'))).toEqual({
      ok: false,
      reason: 'no corral metadata',
    });
    const partial = `<domain><metadata><corral:guest xmlns:corral="${CORRAL_XMLNS}"><corral:profile>p</corral:profile></corral:guest></metadata></domain>`;
    expect(readMeta(parseDomainXml(partial))).toMatchObject({
      ok: false,
      reason: expect.stringContaining('lacks gen'),
    });
  });
});

describe('runner XML from a template', () => {
  const xml = runnerDomainXml(templateXml, {
    name: 'ci-runner-tiny.3',
    meta: { ...meta, createdAt: '2026-02-02T00:00:00.000Z' },
    disk: '/i/runners/ci-runner-tiny.3.qcow2',
    seed: '/i/seeds/runners/ci-runner-tiny.3.iso',
    statusSocket: '/i/sockets/ci-runner-tiny.3.status.sock',
    consoleSocket: '/i/sockets/ci-runner-tiny.3.console.sock',
    owner: { uid: 105, gid: 115 },
  });
  const doc = parseDomainXml(xml);
  const dev = doc.domain['devices'] as XmlNode;

  it('renames, drops the uuid and MACs, keeps the metadata', () => {
    expect(doc.domain['name']).toBe('ci-runner-tiny.3');
    expect(doc.domain['uuid']).toBeUndefined();
    expect(xml).not.toContain('52:54:00');
    expect(readMeta(doc)).toEqual({ ok: true, meta: { ...meta, createdAt: '2026-02-02T00:00:00.000Z' } });
  });

  it("boots its own overlay with its own seed instead of the template's, and has its own sockets", () => {
    const disks = children(dev, 'disk');
    expect(disks.map(sourcePath)).toEqual([
      '/i/runners/ci-runner-tiny.3.qcow2',
      '/i/seeds/runners/ci-runner-tiny.3.iso',
    ]);
    expect(disks[0]?.['backingStore']).toBeUndefined();
    expect(dev['console']).toBeUndefined();
    expect(filesOfDomain(doc).sort()).toEqual(
      [
        '/i/runners/ci-runner-tiny.3.qcow2',
        '/i/seeds/runners/ci-runner-tiny.3.iso',
        '/i/sockets/ci-runner-tiny.3.console.sock',
        '/i/sockets/ci-runner-tiny.3.status.sock',
        '/i/templates/tiny@g.kernel',
      ].sort(),
    );
    expect(children(dev, 'channel')).toHaveLength(2); // the guest agent channel stays
  });
});

describe('virsh batch output', () => {
  it('splits on markers and drops echoed commands', () => {
    const n = 'abc123';
    const out =
      `virsh # echo @@corral-${n}''@@0@@\n@@corral-${n}@@0@@virsh # dumpxml 'gone'\n` +
      `virsh # echo @@corral-${n}''@@1@@\n@@corral-${n}@@1@@virsh # domstate --reason 'x'\nshut off (crashed)\n\n` +
      `virsh # echo @@corral-${n}''@@end@@\n@@corral-${n}@@end@@virsh # \n`;
    expect(splitBatch(out, n, 2)).toEqual(['', 'shut off (crashed)']);
  });

  it('fails when virsh stopped before the end marker', () => {
    expect(() => splitBatch('@@corral-n@@0@@partial', 'n', 1)).toThrow(/ended early/);
  });
});

describe('states and verdicts', () => {
  it.each([
    ['running (booted)', 'running'],
    ['shut off (shutdown)', 'shutoff'],
    ['shut off (crashed)', 'crashed'],
    ['crashed (panicked)', 'crashed'],
    ['paused (user)', 'paused'],
    ['pmsuspended (unknown)', 'other'],
  ])('%s → %s', (text, state) => {
    expect(parseDomstate(text).state).toBe(state);
  });

  it('reads the first status line', () => {
    expect(parseVerdict('ok\n')).toEqual({ ok: true });
    expect(parseVerdict('\nfailed: disk full\nok\n')).toEqual({ ok: false, reason: 'disk full' });
    expect(parseVerdict('')).toEqual({ ok: false, reason: 'no verdict on the status channel' });
    expect(parseVerdict('ready\n')).toMatchObject({ ok: false });
  });
});

describe('listings', () => {
  it('reads uuid/name pairs and per-guest states from domstats', () => {
    const list =
      '3ee17275-51cb-40be-b152-ffdabc240df3 ci-runner-tiny.0\nf7a4d043-392f-4559-986c-13a726ca5ca8 odd name\n\n';
    expect([...parseUuidList(list)]).toEqual([
      ['ci-runner-tiny.0', '3ee17275-51cb-40be-b152-ffdabc240df3'],
      ['odd name', 'f7a4d043-392f-4559-986c-13a726ca5ca8'],
    ]);
    const stats = [
      "Domain: 'a'",
      '  state.state=1',
      '  state.reason=1',
      '',
      "Domain: 'b'",
      '  state.state=5',
      '  state.reason=3',
      '',
      "Domain: 'c'",
      '  state.state=6',
      '  state.reason=1',
      '',
      "Domain: 'd'",
      '  state.state=5',
      '  state.reason=1',
      '',
    ].join('\n');
    expect(Object.fromEntries(parseDomstats(stats))).toEqual({
      a: { state: 'running', reason: '1' },
      b: { state: 'crashed', reason: 'crashed' },
      c: { state: 'crashed', reason: 'panicked' },
      d: { state: 'shutoff', reason: 'shutdown' },
    });
  });
});
