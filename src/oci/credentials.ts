/**
 * Registry credentials in the docker config file (`$DOCKER_CONFIG/config.json`, else
 * `~/.docker/config.json`), the file docker, podman and skopeo also read. `corral login` writes
 * `auths.<host>.auth` there; credential helpers named by `credHelpers`/`credsStore` are asked
 * through their documented `docker-credential-<name> get` protocol.
 */
import { chmod, mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { execaExec } from '../exec/exec.js';
import { ConfigError } from '../errors.js';
import { writeFileAtomic } from '../util/atomic-write.js';

export interface Credentials {
  username: string;
  password: string;
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [other: string]: unknown;
}

export function dockerConfigPath(env: NodeJS.ProcessEnv): string {
  const dir = env.DOCKER_CONFIG ?? path.join(env.HOME ?? homedir(), '.docker');
  return path.join(dir, 'config.json');
}

async function readDockerConfig(file: string): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as DockerConfig;
  } catch (err) {
    throw new ConfigError(`cannot read registry credentials: ${file}: ${(err as Error).message}`);
  }
}

/** Keys a registry may be stored under: `host`, `https://host`, `http://host`, `https://host/v1/`. */
function keysFor(registry: string): string[] {
  return [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`, `http://${registry}/v1/`];
}

export interface CredentialStore {
  get(registry: string): Promise<Credentials | undefined>;
}

export function dockerCredentialStore(env: NodeJS.ProcessEnv): CredentialStore & {
  save(registry: string, creds: Credentials): Promise<void>;
  remove(registry: string): Promise<boolean>;
  file: string;
} {
  const file = dockerConfigPath(env);
  return {
    file,
    async get(registry) {
      const config = await readDockerConfig(file);
      const helper = config.credHelpers?.[registry] ?? config.credsStore;
      for (const key of keysFor(registry)) {
        const entry = config.auths?.[key];
        if (!entry) continue;
        if (entry.auth) {
          const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
          const colon = decoded.indexOf(':');
          if (colon < 0) throw new ConfigError(`${file}: auths["${key}"].auth is not base64 of user:password`);
          return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
        }
        if (entry.username && entry.password) return { username: entry.username, password: entry.password };
      }
      if (helper) return fromHelper(helper, registry);
      return undefined;
    },
    async save(registry, creds) {
      const config = await readDockerConfig(file);
      const auths = { ...(config.auths ?? {}) };
      for (const key of keysFor(registry)) delete auths[key];
      auths[registry] = { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') };
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await writeFileAtomic(file, `${JSON.stringify({ ...config, auths }, null, 2)}\n`);
      await chmod(file, 0o600);
    },
    async remove(registry) {
      const config = await readDockerConfig(file);
      const auths = { ...(config.auths ?? {}) };
      const had = keysFor(registry).filter((k) => k in auths);
      if (had.length === 0) return false;
      for (const key of had) delete auths[key];
      await writeFileAtomic(file, `${JSON.stringify({ ...config, auths }, null, 2)}\n`);
      return true;
    },
  };
}

async function fromHelper(helper: string, registry: string): Promise<Credentials | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await execaExec(`docker-credential-${helper}`, ['get'], { input: registry, timeoutMs: 30_000 }));
  } catch {
    return undefined; // "credentials not found" is a non-zero exit by the helper protocol
  }
  const parsed = JSON.parse(stdout) as { Username?: string; Secret?: string };
  return parsed.Secret ? { username: parsed.Username ?? '', password: parsed.Secret } : undefined;
}
