/**
 * sha256 off the main thread: WebCrypto's digest runs on libuv's thread pool, so chunks hash in
 * parallel with each other and with compression instead of queueing on the event loop.
 */
import { webcrypto } from 'node:crypto';

export async function sha256Digest(data: Buffer): Promise<string> {
  const hash = await webcrypto.subtle.digest('SHA-256', data);
  return `sha256:${Buffer.from(hash).toString('hex')}`;
}
