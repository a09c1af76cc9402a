/**
 * Command failures through fake `virsh` and `qemu-img` executables put first on PATH (execa's
 * fixture style): the middle layer between unit tests and the real libvirtd. Each scenario is a
 * small shell script; the product runs it exactly as it would run the real tool.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CommandError, errorKind, GuestExistsError, NoSuchGuestError, TransientError } from '../../src/errors.js';
import { createLibvirtHypervisor } from '../../src/hypervisor/libvirt/libvirt-hypervisor.js';
import { createOverlay } from '../../src/hypervisor/libvirt/qcow2.js';
import { createVirsh } from '../../src/hypervisor/libvirt/virsh.js';
import { MemoryHypervisor } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { rebuildName, templateName } from '../../src/hypervisor/names.js';
import { execaExec } from '../../src/exec/exec.js';
import { aProfile, genAt, NOW } from '../builders/guests.js';

let bin: string;
let work: string;
const originalPath = process.env.PATH;
const URI = 'qemu:///fake';

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'corral-fake-bin-'));
  bin = path.join(work, 'bin');
  await mkdir(bin);
  process.env.PATH = `${bin}:${originalPath ?? ''}`;
});
afterAll(async () => {
  process.env.PATH = originalPath;
  await rm(work, { recursive: true, force: true });
});
beforeEach(async () => {
  await rm(path.join(bin, 'virsh'), { force: true });
  await rm(path.join(bin, 'qemu-img'), { force: true });
});

async function fake(tool: 'virsh' | 'qemu-img', body: string): Promise<void> {
  const file = path.join(bin, tool);
  await writeFile(file, `#!/bin/bash\n${body}\n`);
  await chmod(file, 0o755);
}

/** virsh's interactive mode as `batch` drives it: echo the markers, fail every other command like a missing domain. */
const BATCH_NO_DOMAIN = `
if [ "$#" -le 3 ]; then
  while IFS= read -r line; do
    case "$line" in
      echo\\ *) s="\${line#echo }"; echo "\${s//\\'\\'/}" ;;
      '') ;;
      *) echo "error: failed to get domain 'ci-runner-tiny.1'" >&2 ;;
    esac
  done
  exit 0
fi`;

const libvirt = () =>
  createLibvirtHypervisor({
    uri: URI,
    prefix: 'ci',
    imagesDir: path.join(work, 'images'),
    log: pino({ level: 'silent' }),
  });

async function caught(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (error) {
    return error;
  }
  throw new Error('expected a failure');
}

describe('command errors from fake executables', () => {
  it("keeps execa's own fields: the escaped command, exit code and stderr of a libvirt error", async () => {
    await fake('virsh', `echo "error: Requested operation is not valid: cannot rename active domain" >&2; exit 3`);
    const gen = genAt(1);
    const error = await caught(libvirt().promote(rebuildName('ci', 'tiny', gen), templateName('ci', 'tiny', gen)));
    expect(error).toBeInstanceOf(CommandError);
    const e = error as CommandError;
    expect(e.exitCode).toBe(3);
    expect(e.signal).toBeUndefined();
    expect(e.timedOut).toBe(false);
    expect(e.stderr).toMatch(/cannot rename active domain/);
    expect(e.command).toBe(`virsh -q -c '${URI}' domrename 'ci-rebuild-tiny@${gen}' 'ci-template-tiny@${gen}'`);
    expect(e.message).toBe(
      'virsh domrename failed: error: Requested operation is not valid: cannot rename active domain',
    );
    expect(errorKind(e)).toBe('command');
  });

  it('turns a command that hangs past its timeout into a transient CommandError', async () => {
    await fake('virsh', 'exec sleep 5');
    const error = await caught(createVirsh(URI, execaExec, 200).run(['list']));
    expect(error).toBeInstanceOf(CommandError);
    expect((error as CommandError).timedOut).toBe(true);
    expect((error as CommandError).message).toMatch(/^virsh list failed: timed out after \d+ ms$/);
    expect(errorKind(error)).toBe('transient');
  });

  it('says which signal killed a command, and counts it as transient', async () => {
    await fake('qemu-img', 'kill -KILL $$');
    const error = await caught(createOverlay(execaExec, '/nonexistent/base.qcow2', path.join(work, 'x.qcow2')));
    expect(error).toBeInstanceOf(CommandError);
    expect((error as CommandError).signal).toBe('SIGKILL');
    expect((error as CommandError).exitCode).toBeUndefined();
    expect((error as CommandError).message).toBe('qemu-img create failed: killed by SIGKILL');
    expect(errorKind(error)).toBe('transient');
  });

  it('reads "cannot connect to libvirtd" in stderr as transient, so a listing that fails is never "no guests"', async () => {
    await fake(
      'virsh',
      `echo "error: failed to connect to the hypervisor" >&2
echo "error: Failed to connect socket to '/run/libvirt/libvirt-sock': Connection refused" >&2
exit 1`,
    );
    const error = await caught(libvirt().observe());
    expect(error).toBeInstanceOf(TransientError);
    expect((error as TransientError).message).toMatch(/libvirtd is not answering/);
    expect((error as Error).cause).toBeInstanceOf(CommandError);
  });

  it('treats "domain not found" during destroy as already destroyed', async () => {
    await fake('virsh', `${BATCH_NO_DOMAIN}\necho "error: failed to get domain 'ci-runner-tiny.1'" >&2; exit 1`);
    await expect(libvirt().destroy('ci-runner-tiny.1')).resolves.toBeUndefined();
  });

  it('throws the same class as the memory backend for a guest that is gone or already there', async () => {
    const gen = genAt(1);
    const memory = new MemoryHypervisor({ prefix: 'ci', clock: () => NOW });
    const profile = aProfile().build();

    await fake('virsh', `echo "error: failed to get domain 'ci-rebuild-tiny@${gen}'" >&2; exit 1`);
    const gone = [
      await caught(libvirt().promote(rebuildName('ci', 'tiny', gen), templateName('ci', 'tiny', gen))),
      await caught(memory.promote(rebuildName('ci', 'tiny', gen), templateName('ci', 'tiny', gen))),
    ];
    for (const e of gone) expect(e).toBeInstanceOf(NoSuchGuestError);

    await fake('virsh', `echo "running (booted)"`);
    const name = rebuildName('ci', 'tiny', gen);
    const meta = { profile: 'tiny', gen, inputsHash: profile.inputsHash, baseVersion: '', createdAt: '' };
    const baseImage = '/images/base.qcow2';
    await memory.startBuild({ name, profile, meta, baseImage });
    const exists = [
      await caught(libvirt().startBuild({ name, profile, meta, baseImage })),
      await caught(memory.startBuild({ name, profile, meta, baseImage })),
    ];
    for (const e of exists) {
      expect(e).toBeInstanceOf(GuestExistsError);
      expect(errorKind(e)).toBe('transient');
    }
  });
});
