/**
 * zstd through @mongodb-js/zstd (a native binding, prebuilt per platform, run on libuv's thread
 * pool). Measured against the `zstd` binary through execa in `npm run bench` (bench/zstd.ts): the
 * binding is several times faster per 32 MiB chunk because no process is spawned and no pipe
 * copied; docs/oci-format.md has the figures.
 */
import { compress, decompress } from '@mongodb-js/zstd';

export function compressChunk(data: Buffer, level: number): Promise<Buffer> {
  return compress(data, level);
}

export function decompressChunk(data: Buffer): Promise<Buffer> {
  return decompress(data);
}
