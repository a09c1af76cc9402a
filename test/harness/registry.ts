/**
 * A real OCI registry for tests: Debian's docker-registry on 127.0.0.1, on a free port, storing
 * in a temp dir, optionally behind htpasswd. stop() kills it and removes its storage. A counting
 * proxy (countingProxy) sits in front when a test needs to know which requests were made, or to
 * act on the n-th blob download.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export interface Registry {
  /** `127.0.0.1:<port>` */
  host: string;
  /** Blob storage root (docker/registry/v2/…) for tests that corrupt a blob. */
  storage: string;
  /** CPU time (user + system) the registry process has used so far, in ms (Linux /proc), for benchmarks. */
  cpuMs(): number;
  /** Kills the registry but keeps its storage: an outage. */
  pause(): Promise<void>;
  /** Starts it again on the same port with the same storage. */
  resume(): Promise<void>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export async function startRegistry(opts: { htpasswd?: { user: string; password: string } } = {}): Promise<Registry> {
  const dir = await mkdtemp(path.join(tmpdir(), 'corral-registry-'));
  const port = await freePort();
  const storage = path.join(dir, 'data');
  let auth = '';
  if (opts.htpasswd) {
    await execa('htpasswd', ['-Bbc', path.join(dir, 'htpasswd'), opts.htpasswd.user, opts.htpasswd.password]);
    auth = `auth:\n  htpasswd:\n    realm: corral-test\n    path: ${path.join(dir, 'htpasswd')}\n`;
  }
  const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${auth}`;
  await writeFile(path.join(dir, 'config.yml'), config);
  const host = `127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const kill = () => child?.kill('SIGKILL');
  process.once('exit', kill);
  const spawnRegistry = async (): Promise<void> => {
    const proc = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child = proc;
    let stderr = '';
    proc.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`docker-registry exited: ${stderr}`);
      const ok = await fetch(`http://${host}/v2/`).then(
        (r) => r.status === 200 || r.status === 401,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`docker-registry did not answer on ${host}: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const halt = async (): Promise<void> => {
    const proc = child;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
  };
  await spawnRegistry();
  let stopped: Promise<void> | undefined;
  return {
    host,
    storage,
    cpuMs() {
      // utime and stime, fields 14 and 15 of /proc/<pid>/stat, in clock ticks (100 per second on Linux).
      const fields = readFileSync(`/proc/${child?.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(fields[11]) + Number(fields[12])) * 10;
    },
    pause: halt,
    resume: spawnRegistry,
    stop() {
      stopped ??= (async () => {
        process.off('exit', kill);
        await halt();
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}

export interface ProxyRequest {
  method: string;
  path: string;
}

export interface CountingProxy {
  host: string;
  requests: ProxyRequest[];
  /** Requests that upload blob data (PATCH, or a PUT that closes an upload with a body). */
  blobUploads(): ProxyRequest[];
  blobDownloads(): ProxyRequest[];
  /** Called after each blob GET was answered in full. */
  onBlobDownloaded?: (count: number) => void;
  reset(): void;
  stop(): Promise<void>;
}

/** A transparent HTTP proxy to `target` that records every request. */
export async function countingProxy(target: string): Promise<CountingProxy> {
  const requests: (ProxyRequest & { bodyBytes: number })[] = [];
  let downloads = 0;
  const proxy: CountingProxy = {
    host: '',
    requests,
    blobUploads: () =>
      requests.filter(
        (r) =>
          /\/blobs\/uploads\//.test(r.path) &&
          (r.method === 'PATCH' || r.method === 'PUT') &&
          (r as { bodyBytes: number }).bodyBytes > 0,
      ),
    blobDownloads: () => requests.filter((r) => r.method === 'GET' && /\/blobs\/sha256:/.test(r.path)),
    reset: () => void requests.splice(0),
    stop: () => new Promise((r) => server.close(() => r())),
  };
  const server = http.createServer((req, res) => {
    const entry = { method: req.method ?? '', path: req.url ?? '', bodyBytes: 0 };
    requests.push(entry);
    const upstream = http.request(
      {
        host: '127.0.0.1',
        port: Number(target.split(':')[1]),
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target },
      },
      (up) => {
        const headers = { ...up.headers };
        if (typeof headers.location === 'string')
          headers.location = headers.location.replace(`//${target}`, `//${proxy.host}`);
        res.writeHead(up.statusCode ?? 502, headers);
        up.pipe(res);
        up.on('end', () => {
          if (entry.method === 'GET' && /\/blobs\/sha256:/.test(entry.path) && (up.statusCode ?? 0) < 300)
            proxy.onBlobDownloaded?.(++downloads);
        });
      },
    );
    upstream.on('error', () => res.destroy());
    req.on('data', (d: Buffer) => (entry.bodyBytes += d.length));
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  proxy.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return proxy;
}
