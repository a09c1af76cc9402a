/**
 * sha256 of a chunk with node:crypto's incremental hash, in 4 MiB slices with a turn of the event
 * loop between them, so hashing a 32 MiB chunk (~20 ms) never holds up the sockets of the uploads
 * and downloads in flight. Not WebCrypto's digest: it copies its input before hashing, which cost
 * more than the hashing itself on the 2-core machine (docs/oci-format.md, *Performance*).
 */
import { createHash, type Hash } from 'node:crypto';
import { setImmediate as turn } from 'node:timers/promises';

export const HASH_SLICE = 4 * 1024 * 1024;

export async function sha256Digest(data: Buffer): Promise<string> {
  const hash = createHash('sha256');
  await hashInto(hash, data);
  return `sha256:${hash.digest('hex')}`;
}

export async function hashInto(hash: Hash, data: Buffer): Promise<void> {
  for (let at = 0; at < data.length; at += HASH_SLICE) {
    if (at > 0) await turn();
    hash.update(data.subarray(at, Math.min(at + HASH_SLICE, data.length)));
  }
}
