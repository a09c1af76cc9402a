import { ConfigError } from '../../errors.js';
import { RegistryClient } from '../../oci/client.js';
import { dockerCredentialStore, type Credentials } from '../../oci/credentials.js';
import { EXIT, type Command } from '../command.js';

export const loginCommand: Command = {
  name: 'login',
  summary: 'Check credentials against a registry and store them in the docker config file (~/.docker/config.json).',
  usage: 'corral login <registry> --username USER --password-stdin',
  optionsHelp: `  --username USER      registry user name
  --password-stdin     read the password (or token) from standard input`,
  options: { username: { type: 'string', short: 'u' }, 'password-stdin': { type: 'boolean' } },
  positionals: 1,
  minPositionals: 1,
  async run(ctx) {
    const registry = ctx.positionals[0] as string;
    const username = ctx.args.username as string | undefined;
    if (!username) throw new ConfigError('login needs --username');
    if (!ctx.args['password-stdin'])
      throw new ConfigError('login needs --password-stdin (passwords never go on the command line)');
    const password = (await readStdin()).replace(/\r?\n$/, '');
    if (!password) throw new ConfigError('no password on standard input');
    const creds: Credentials = { username, password };
    // Verified before saving, so a typo never replaces working credentials.
    await new RegistryClient(registry, { credentials: { get: () => Promise.resolve(creds) }, retries: 1 }).ping();
    const store = dockerCredentialStore(ctx.env);
    await store.save(registry, creds);
    ctx.io.out(`logged in to ${registry} as ${username} (saved in ${store.file})\n`);
    return EXIT.ok;
  },
};

export const logoutCommand: Command = {
  name: 'logout',
  summary: 'Remove the stored credentials for a registry from the docker config file.',
  usage: 'corral logout <registry>',
  optionsHelp: '',
  options: {},
  positionals: 1,
  minPositionals: 1,
  async run(ctx) {
    const registry = ctx.positionals[0] as string;
    const store = dockerCredentialStore(ctx.env);
    const removed = await store.remove(registry);
    ctx.io.out(removed ? `logged out of ${registry}\n` : `no credentials stored for ${registry} in ${store.file}\n`);
    return EXIT.ok;
  },
};

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of process.stdin) parts.push(part as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
