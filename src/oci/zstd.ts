/**
 * zstd through @mongodb-js/zstd (a native binding, prebuilt per platform, run on libuv's thread
 * pool). Measured against the `zstd` binary through execa in `npm run bench oci`: the binding is
 * several times faster per 32 MiB chunk because no process is spawned and no pipe copied;
 * docs/oci-format.md has the figures.
 */
import { createRequire } from 'node:module';
import { compress, decompress } from '@mongodb-js/zstd';

const bindingVersion = (createRequire(import.meta.url)('@mongodb-js/zstd/package.json') as { version: string }).version;

/** Names what produced compressed chunks, for caches of chunk digests (a new encoder may compress differently). */
export const ZSTD_ENCODER = `@mongodb-js/zstd@${bindingVersion}`;

export function compressChunk(data: Buffer, level: number): Promise<Buffer> {
  return compress(data, level);
}

export function decompressChunk(data: Buffer): Promise<Buffer> {
  return decompress(data);
}
