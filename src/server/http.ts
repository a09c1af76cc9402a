import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** A request that cannot be served: becomes `{ error: { code, message } }` with its status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const MAX_BODY_BYTES = 64 * 1024;

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, error: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, error.status, { error: { code: error.code, message: error.message } }, error.headers);
}

export function sendText(res: ServerResponse, status: number, text: string, contentType: string): void {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'content-type': contentType,
    'content-length': String(Buffer.byteLength(text)),
  });
  res.end(text);
}

/**
 * The request body as JSON (an empty body is `{}`): 413 past MAX_BODY_BYTES (checked against the
 * declared length first, then while reading), 400 when it does not parse or is not an object.
 */
export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw tooLarge();
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new HttpError(400, 'malformed-json', `the body is not valid JSON: ${(error as Error).message}`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
    throw new HttpError(400, 'invalid-body', 'the body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function tooLarge(): HttpError {
  return new HttpError(413, 'body-too-large', `the body is larger than ${MAX_BODY_BYTES} bytes`);
}

/**
 * Checks `Authorization: Bearer <token>` against the token in `tokenFile`, read at every request
 * (so a rotated token takes effect at once). Both sides are hashed first, so the comparison is
 * constant-time whatever their lengths.
 */
export async function authorize(req: IncomingMessage, tokenFile: string | undefined): Promise<void> {
  if (!tokenFile)
    throw new HttpError(403, 'mutations-disabled', 'this server is read-only: set server.tokenFile in the host config');
  const expected = (await readFile(tokenFile, 'utf8').catch(() => '')).trim();
  if (!expected)
    throw new HttpError(503, 'no-token', `the token file ${tokenFile} is missing or empty; mutations are refused`);
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  const challenge = { 'www-authenticate': 'Bearer realm="corral"' };
  if (!match) throw new HttpError(401, 'unauthorized', 'this request needs "Authorization: Bearer <token>"', challenge);
  const digest = (s: string) => createHash('sha256').update(s).digest();
  if (!timingSafeEqual(digest(match[1] as string), digest(expected)))
    throw new HttpError(401, 'unauthorized', 'the bearer token is wrong', challenge);
}

/** Decodes one path segment; a segment that does not decode, or decodes to a path, is a 400. */
export function segment(raw: string, what: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, 'invalid-name', `${what} is not valid percent-encoding`);
  }
  if (value === '' || value.includes('/') || value.includes('\\') || value.includes('\0') || value.startsWith('.'))
    throw new HttpError(400, 'invalid-name', `${what} "${value}" is not a name`);
  return value;
}
