/**
 * Every failure talking to GitHub is transient for corral (DESIGN: a forge outage never stops the
 * loop): 5xx, timeouts, HTML error pages, 401/403, rate limits. This turns whatever octokit threw
 * into one short, secret-free summary and the earliest time worth trying again.
 */
import { TransientError } from '../../errors.js';

export class ForgeError extends TransientError {
  constructor(
    /** `GitHub`, or `hook` for generic hooks. */
    readonly system: string,
    /** What went wrong, short enough for one status line: `503`, `timeout`, `HTML 502 page`. */
    readonly summary: string,
    /** When the server said to come back (retry-after / x-ratelimit-reset), if it did. */
    readonly retryAt?: Date,
    options?: { cause?: unknown; status?: number },
  ) {
    super(`${system}: ${summary}`, options);
    this.status = options?.status;
  }
  /** The HTTP status, when there was one (a 409 name conflict is handled, not just reported). */
  readonly status: number | undefined;
}

interface HttpishError {
  status?: number;
  message?: string;
  name?: string;
  code?: string;
  response?: { headers?: Record<string, string | number | undefined>; data?: unknown };
  cause?: unknown;
}

/** The GitHub failure as a ForgeError; `now` anchors a relative retry-after. */
export function classifyGitHubError(error: unknown, now: Date): ForgeError {
  if (error instanceof ForgeError) return error;
  const e = (error ?? {}) as HttpishError;
  const headers = e.response?.headers ?? {};
  const retryAt = retryAtFrom(headers, now);
  if (isTimeout(e)) return new ForgeError('GitHub', 'timeout', retryAt, { cause: error });
  const status = typeof e.status === 'number' ? e.status : undefined;
  if (status === undefined || (status === 500 && e.response === undefined)) {
    // octokit reports network failures as status 500 without a response, the fetch error as cause.
    const network = networkCode(e);
    if (network) return new ForgeError('GitHub', `unreachable (${network})`, retryAt, { cause: error });
    if (status === undefined)
      return new ForgeError('GitHub', oneLine(e.message ?? String(error)), retryAt, { cause: error });
  }
  const html = looksLikeHtml(e.response?.data) || looksLikeHtml(e.message);
  if (html) return new ForgeError('GitHub', `HTML ${status} page`, retryAt, { cause: error, status });
  const rateLimited =
    headers['x-ratelimit-remaining'] === '0' ||
    headers['x-ratelimit-remaining'] === 0 ||
    (status === 403 || status === 429 ? /rate limit/i.test(e.message ?? '') : false);
  if (rateLimited) return new ForgeError('GitHub', `${status} rate limited`, retryAt, { cause: error, status });
  const detail = apiMessage(e);
  return new ForgeError('GitHub', detail ? `${status} ${detail}` : `${status}`, retryAt, { cause: error, status });
}

/** `retry-after` (seconds or an HTTP date) wins over `x-ratelimit-reset` (epoch seconds). */
export function retryAtFrom(headers: Record<string, string | number | undefined>, now: Date): Date | undefined {
  const after = headers['retry-after'];
  if (after !== undefined && after !== '') {
    const seconds = Number(after);
    if (Number.isFinite(seconds)) return new Date(now.getTime() + Math.max(0, seconds) * 1000);
    const date = Date.parse(String(after));
    if (Number.isFinite(date)) return new Date(date);
  }
  const reset = Number(headers['x-ratelimit-reset']);
  if (headers['x-ratelimit-reset'] !== undefined && Number.isFinite(reset) && reset > 0) return new Date(reset * 1000);
  return undefined;
}

function isTimeout(e: HttpishError): boolean {
  const names = [e.name, (e.cause as HttpishError | undefined)?.name];
  return names.includes('TimeoutError') || names.includes('AbortError') || /timeout|aborted/i.test(e.message ?? '');
}

function networkCode(e: HttpishError): string | undefined {
  for (let c: unknown = e.cause, depth = 0; c && depth < 4; c = (c as HttpishError).cause, depth++) {
    const code = (c as HttpishError).code;
    if (typeof code === 'string') return code;
  }
  const cause = e.cause as HttpishError | undefined;
  if (cause?.message) return oneLine(cause.message);
  return /fetch failed/i.test(e.message ?? '') ? 'fetch failed' : undefined;
}

function looksLikeHtml(value: unknown): boolean {
  return typeof value === 'string' && /^\s*(<!doctype html|<html)/i.test(value);
}

/** GitHub's JSON `message` (never a body we did not recognise: it could be anything). */
function apiMessage(e: HttpishError): string | undefined {
  const data = e.response?.data;
  if (data && typeof data === 'object' && typeof (data as { message?: unknown }).message === 'string') {
    return oneLine((data as { message: string }).message);
  }
  return undefined;
}

function oneLine(text: string): string {
  const line = text.split('\n')[0] ?? '';
  return line.length > 120 ? `${line.slice(0, 117)}…` : line;
}
