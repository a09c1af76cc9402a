/**
 * A real `corral serve` child process on the memory backend, on a free port, with a token file:
 *
 *   const served = await startServe({ profiles: { web: 2 }, buildMs: 1500 });
 *   await served.post('/api/v1/reconcile');   // carries the token
 *   await served.stop();                      // SIGTERM; resolves with the exit code
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { aHostConfig, aProfileDir, BIN, REPO, tempRoot } from '../builders/profile-dir.js';

export const TOKEN = 'test-token-4f1c2a';

export interface Served {
  url: string;
  root: string;
  stateDir: string;
  child: ChildProcess;
  stderr(): string;
  get(path: string, init?: RequestInit): Promise<Response>;
  post(path: string, body?: string, token?: string | null): Promise<Response>;
  stop(): Promise<number | null>;
}

export interface ServeOptions {
  profiles?: Record<string, number>;
  /** Extra profile.yaml fields per profile (a `ci:` section, …). */
  profileYaml?: Record<string, Record<string, unknown>>;
  /** Extra corral.yaml fields. */
  hostYaml?: Record<string, unknown>;
  buildMs?: number;
  outcomes?: string;
  tokenFile?: boolean;
}

export async function startServe(opts: ServeOptions = {}): Promise<Served> {
  const { file } = await aServeRoot(opts);
  return spawnServer(file, ['serve'], opts);
}

/** A temp root with profiles, a token file and a corral.yaml (memory backend, a free port). */
export async function aServeRoot(opts: ServeOptions = {}): Promise<{ root: string; file: string }> {
  const root = await tempRoot('corral-serve-');
  for (const [name, runners] of Object.entries(opts.profiles ?? { web: 2 }))
    await aProfileDir(join(root, 'profiles'), name)
      .runners(runners)
      .yaml(opts.profileYaml?.[name] ?? {})
      .write();
  await writeFile(join(root, 'token'), `${TOKEN}\n`);
  const config = aHostConfig(root)
    .source('local', 'profiles')
    .set({ server: { listen: '127.0.0.1:0', ...(opts.tokenFile === false ? {} : { tokenFile: 'token' }) } })
    .set(opts.hostYaml ?? {});
  return { root, file: await config.write() };
}

/** Runs `corral <args> --config file` and waits for its console to listen. */
export async function spawnServer(file: string, args: string[], opts: ServeOptions = {}): Promise<Served> {
  const root = dirname(file);
  const child = spawn(process.execPath, [BIN, ...args, '--config', file], {
    cwd: REPO,
    env: {
      ...process.env,
      CORRAL_CONFIG: '',
      CORRAL_LOG_LEVEL: 'info',
      CORRAL_MEMORY_BUILD_MS: String(opts.buildMs ?? 0),
      CORRAL_MEMORY_OUTCOMES: opts.outcomes ?? '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stdout?.resume();
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`corral ${args[0]} did not start:\n${stderr}`)), 20_000);
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /"url":"(http:\/\/[^"]+)\/".*"msg":"corral console listening"/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1] as string);
      }
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      reject(new Error(`corral ${args[0]} exited with ${code}:\n${stderr}`));
    });
  });
  return {
    url,
    root,
    stateDir: join(root, 'state'),
    child,
    stderr: () => stderr,
    get: (path, init) => fetch(`${url}${path}`, init),
    post: (path, body, token = TOKEN) =>
      fetch(`${url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        ...(body !== undefined ? { body } : {}),
      }),
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Polls `check` until it returns a value (not undefined) or the time is up. */
export async function eventually<T>(
  check: () => Promise<T | undefined>,
  timeoutMs = 15_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Reads Server-Sent Events from a response body until `stop` returns true for one of them (or the time is up). */
export async function readEvents(
  res: Response,
  stop: (event: { event: string; data: unknown }) => boolean,
  timeoutMs = 15_000,
): Promise<{ event: string; data: unknown }[]> {
  const events: { event: string; data: unknown }[] = [];
  const reader = (res.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
  const timer = setTimeout(() => void reader.cancel(), timeoutMs);
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return events;
      buffer += value;
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (!event || data === undefined) continue;
        const parsed = { event, data: JSON.parse(data) as unknown };
        events.push(parsed);
        if (stop(parsed)) {
          await reader.cancel();
          return events;
        }
      }
    }
  } finally {
    clearTimeout(timer);
  }
}
