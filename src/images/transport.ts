/**
 * Reading base images and checksum lists from http(s):// and file:// URLs, with no other client
 * than Node's own fetch. Downloads append to a partial file and resume it with an HTTP Range
 * request, so a cut transfer of a multi-gigabyte image costs only what was missing.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { open, readFile, stat, truncate } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TransientError } from '../errors.js';

export interface Progress {
  url: string;
  /** Bytes in the partial file so far (resumed bytes included). */
  received: number;
  /** Total size when the server said it. */
  total?: number;
  /** Bytes that were already there when this transfer began. */
  resumedFrom: number;
}

/** How long a transfer may stall before it is cut (the partial file stays for the next try). */
const IDLE_MS = 60_000;

/** A small text file (a checksum list); any failure is transient: the next pass tries again. */
export async function fetchText(url: string, timeoutMs = 30_000): Promise<string> {
  try {
    if (url.startsWith('file:')) return await readFile(fileURLToPath(url), 'utf8');
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'follow' });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
    return await response.text();
  } catch (error) {
    throw new TransientError(`cannot read ${url}: ${describe(error)}`, { cause: error });
  }
}

/**
 * Appends the rest of `url` to `partFile` (created if missing), resuming from its current size.
 * A server that ignores the Range header gets the file rewritten from the start.
 */
export async function downloadTo(url: string, partFile: string, onProgress?: (p: Progress) => void): Promise<void> {
  const have = await stat(partFile).then(
    (s) => s.size,
    () => 0,
  );
  // Touch the file so that a crash before the first byte still leaves a resumable (empty) part.
  await (await open(partFile, 'a')).close();
  try {
    if (url.startsWith('file:')) return await copyFrom(fileURLToPath(url), partFile, have, onProgress, url);
    const controller = new AbortController();
    let idle = setTimeout(() => controller.abort(new Error(`no data for ${IDLE_MS / 1000}s`)), IDLE_MS);
    const response = await fetch(url, {
      signal: controller.signal,
      redirect: 'follow',
      headers: have > 0 ? { Range: `bytes=${have}-` } : {},
    });
    if (response.status === 416 && have > 0) {
      // Nothing after `have`: the part is already whole (verification decides).
      clearTimeout(idle);
      await response.body?.cancel();
      return;
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
    const resumed = response.status === 206;
    const start = resumed ? have : 0;
    if (!resumed && have > 0) await truncate(partFile, 0);
    const length = Number(response.headers.get('content-length') ?? NaN);
    const total = Number.isFinite(length) ? start + length : undefined;
    let received = start;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        clearTimeout(idle);
        idle = setTimeout(() => controller.abort(new Error(`no data for ${IDLE_MS / 1000}s`)), IDLE_MS);
        received += chunk.length;
        onProgress?.({ url, received, ...(total !== undefined ? { total } : {}), resumedFrom: start });
        done(null, chunk);
      },
    });
    try {
      await pipeline(
        Readable.fromWeb(response.body as import('node:stream/web').ReadableStream),
        meter,
        createWriteStream(partFile, { flags: 'a' }),
      );
    } finally {
      clearTimeout(idle);
    }
    if (total !== undefined && received < total)
      throw new Error(`connection closed after ${received} of ${total} bytes`);
  } catch (error) {
    throw new TransientError(
      `download of ${url} failed: ${describe(error)} (the partial file is kept and resumed next time)`,
      {
        cause: error,
      },
    );
  }
}

async function copyFrom(
  source: string,
  partFile: string,
  have: number,
  onProgress: ((p: Progress) => void) | undefined,
  url: string,
): Promise<void> {
  const total = (await stat(source)).size;
  const start = have <= total ? have : 0;
  if (start !== have) await truncate(partFile, 0);
  let received = start;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length;
      onProgress?.({ url, received, total, resumedFrom: start });
      done(null, chunk);
    },
  });
  if (start < total)
    await pipeline(createReadStream(source, { start }), meter, createWriteStream(partFile, { flags: 'a' }));
}

function describe(error: unknown): string {
  const e = error as Error & { cause?: { code?: string; message?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return cause && !e.message.includes(cause) ? `${e.message} (${cause})` : e.message;
}
