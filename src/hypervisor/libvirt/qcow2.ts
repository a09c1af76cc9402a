/**
 * qcow2 overlays, and reading a qcow2's backing file straight from its header: walking the
 * backing chains of every guest's disk then costs file reads, not a qemu-img process per disk.
 */
import { chmod, open } from 'node:fs/promises';
import path from 'node:path';
import type { Exec } from '../../exec/exec.js';
import { hostErrorFor } from './channels.js';

/**
 * Disk images corral makes are 0644 whatever its umask: while a guest runs, libvirt's DAC driver
 * gives each image in its chain to the qemu user (owner and group), so only the "other" bits still
 * let corral read them: to make an overlay on a template its runners are using, and to follow
 * backing chains before deleting anything. (Seeds, which may carry secrets, stay 0600: corral never
 * reads them back.)
 */
export const IMAGE_MODE = 0o644;

/** A qcow2 overlay on `backing`; `sizeBytes` makes it larger than the backing image (never smaller). */
export async function createOverlay(exec: Exec, backing: string, target: string, sizeBytes?: number): Promise<void> {
  const size = sizeBytes === undefined ? [] : [String(sizeBytes)];
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, target, ...size]);
  await chmod(target, IMAGE_MODE);
}

/** The virtual size of an image in bytes, as qemu-img reports it. */
export async function virtualSize(exec: Exec, image: string): Promise<number> {
  const { stdout } = await exec('qemu-img', ['info', '--output=json', '-U', image]);
  return (JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'];
}

const QCOW_MAGIC = 0x514649fb; // "QFI\xfb"

/** The backing file named in a qcow2 header (resolved against the image's dir); undefined if none or not qcow2. */
export async function readBackingFile(image: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(image, 'r');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
    // A chain that cannot be read must never count as "no backing file": that would let a disk in use be deleted.
    throw hostErrorFor(e, image, 'read the backing chain of');
  }
  try {
    const head = Buffer.alloc(20);
    const { bytesRead } = await fh.read(head, 0, 20, 0);
    if (bytesRead < 20 || head.readUInt32BE(0) !== QCOW_MAGIC) return undefined;
    const offset = head.readBigUInt64BE(8);
    const size = head.readUInt32BE(16);
    if (offset === 0n || size === 0 || size > 4096) return undefined;
    const name = Buffer.alloc(size);
    await fh.read(name, 0, size, Number(offset));
    return path.resolve(path.dirname(image), name.toString('utf8'));
  } finally {
    await fh.close();
  }
}

/** The image and every file under it, top first; stops at loops and at 32 levels. */
export async function backingChain(image: string): Promise<string[]> {
  const chain = [path.resolve(image)];
  for (let i = 0; i < 32; i++) {
    const next = await readBackingFile(chain[chain.length - 1]!);
    if (next === undefined || chain.includes(next)) break;
    chain.push(next);
  }
  return chain;
}
