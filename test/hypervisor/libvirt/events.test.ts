import { describe, expect, it } from 'vitest';
import { parseEventLine } from '../../../src/hypervisor/libvirt/events.js';

describe('virsh event lines', () => {
  const at = '2026-11-27 14:14:57.039+0000';

  it('reads lifecycle events into our kinds, with libvirt’s detail and time', () => {
    expect(parseEventLine(`${at}: event 'lifecycle' for domain 'ci-runner-tiny.1': Stopped Destroyed`)).toEqual({
      guest: 'ci-runner-tiny.1',
      kind: 'stopped',
      detail: 'Destroyed',
      time: '2026-11-27T14:14:57.039Z',
    });
    const kind = (rest: string) => parseEventLine(`${at}: event 'lifecycle' for domain 'ci-x': ${rest}`)?.kind;
    expect(kind('Defined Added')).toBe('defined');
    expect(kind('Defined Renamed')).toBe('renamed');
    expect(kind('Undefined Renamed')).toBe('renamed');
    expect(kind('Undefined Removed')).toBe('undefined');
    expect(kind('Started Booted')).toBe('started');
    expect(kind('Stopped Shutdown')).toBe('stopped');
    expect(kind('Stopped Crashed')).toBe('crashed');
    expect(kind('Crashed Panicked')).toBe('crashed');
  });

  it('ignores what says nothing new: suspend/resume, "Shutdown" before "Stopped", other event types, noise', () => {
    const line = (rest: string) => `${at}: event 'lifecycle' for domain 'ci-x': ${rest}`;
    expect(parseEventLine(line('Resumed Unpaused'))).toBeUndefined();
    expect(parseEventLine(line('Shutdown Finished after host request'))).toBeUndefined();
    expect(parseEventLine(`${at}: event 'reboot' for domain 'ci-x'`)).toBeUndefined();
    expect(parseEventLine('events received: 0')).toBeUndefined();
    expect(parseEventLine('')).toBeUndefined();
  });
});
