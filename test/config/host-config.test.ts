import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { builtinProfilesDir, findConfigFile, loadHostConfig, parseListen } from '../../src/config/host-config.js';
import { createValidators } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors.js';
import {
  aHostConfig,
  cleanup,
  corral,
  corralInProcess,
  loadConfig,
  stackLines,
  tempRoot,
} from '../builders/profile-dir.js';

afterAll(cleanup);

/**
 * Runs `corral validate` on a config and expects exit 1 with every line on stderr, no stack. The
 * CLI's main() runs in-process unless `run` says otherwise (the binary costs a Node start-up).
 */
async function expectBadConfig(config: string, lines: string[], run = corralInProcess): Promise<void> {
  const r = await run(['validate', '--config', config]);
  expect(r.exitCode, r.stderr).toBe(1);
  expect(stackLines(r.stderr)).toEqual([]);
  expect(r.stderr).toContain(`corral validate: invalid host config ${config}`);
  for (const line of lines) expect(r.stderr).toContain(line);
}

describe('bad host config → clear error, exit 1', () => {
  it('an unknown key names the key', async () => {
    const host = aHostConfig(await tempRoot()).set({ sorces: [] });
    const file = await host.write();
    await expectBadConfig(file, [`${file}#/sorces: unknown key "sorces"`]);
  });

  it('a bad duration names the pointer', async () => {
    const host = aHostConfig(await tempRoot()).set({ watch: { debounce: '5 parsecs' } });
    const file = await host.write();
    await expectBadConfig(file, [
      `${file}#/watch/debounce: not a duration: "5 parsecs" (use e.g. 300ms, 90s, 30m, 12h, 7d; between 0s and 60s)`,
    ]);
  });

  it('ci.claimWait and ci.maxJobDuration out of range name the pointer and the range', async () => {
    const host = aHostConfig(await tempRoot()).set({ ci: { claimWait: '2d', maxJobDuration: '10s' } });
    const file = await host.write();
    await expectBadConfig(file, [
      `${file}#/ci/claimWait: `,
      '"2d" is out of range: must be between 0s and 24h',
      `${file}#/ci/maxJobDuration: `,
      '"10s" is out of range: must be between 60s and 30d',
    ]);
  });

  it('a bad server.listen names the pointer', async () => {
    const host = aHostConfig(await tempRoot()).set({ server: { listen: 'localhost:99999' } });
    const file = await host.write();
    await expectBadConfig(file, [`${file}#/server/listen: not an address: "localhost:99999"`]);
  });

  it('a duplicate source name', async () => {
    const host = aHostConfig(await tempRoot())
      .source('local', 'a')
      .source('local', 'b');
    const file = await host.write();
    await expectBadConfig(file, [`${file}#/sources/1/name: duplicate source name "local"`]);
  });

  it('both path and glob in one source', async () => {
    const root = await tempRoot();
    const file = await aHostConfig(root)
      .raw(`builtinProfiles: false\nsources:\n  - { name: mnt, path: a, glob: "/mnt/*/corral" }\n`)
      .write();
    await expectBadConfig(file, [`${file}#/sources/0: a source needs exactly one of "path" or "glob"`]);
  });

  it('--config pointing at a missing file', async () => {
    const root = await tempRoot();
    const file = join(root, 'nope.yaml');
    await expectBadConfig(file, [`${file}: no such file`], corral);
  });

  it('every problem at once', async () => {
    const root = await tempRoot();
    const file = await aHostConfig(root)
      .raw(
        'rebuild: { backoffInitial: soon, backoffMax: later }\nsources:\n  - { name: a, path: x }\n  - { name: a }\n',
      )
      .write();
    await expectBadConfig(file, [
      `${file}#/rebuild/backoffInitial: not a duration`,
      `${file}#/rebuild/backoffMax: not a duration`,
      `${file}#/sources/1/name: duplicate source name "a"`,
      `${file}#/sources/1: a source needs exactly one of "path" or "glob"`,
    ]);
  });
});

describe('host config in-process', () => {
  const validators = createValidators();

  it('no file at all: the built-in default (prefix ci, ./state, built-in profiles only)', async () => {
    const cwd = await tempRoot();
    const config = await loadHostConfig(undefined, { validators, env: {}, cwd });
    expect(config.prefix).toBe('ci');
    expect(config.stateDir).toBe(join(cwd, 'state'));
    expect(config.sources).toEqual([{ name: 'builtin', path: builtinProfilesDir() }]);
  });

  it('relative paths resolve against the config file, built-in profiles come first', async () => {
    const root = await tempRoot();
    const file = await aHostConfig(join(root, 'etc'))
      .builtinProfiles(true)
      .set({ stateDir: '../var/state', watch: { debounce: '300ms', resync: '2m' } })
      .source('local', 'profiles')
      .glob('mnt', '/mnt/*/corral')
      .write();
    const { config } = await loadConfig(file);
    expect(config.file).toBe(file);
    expect(config.stateDir).toBe(join(root, 'var', 'state'));
    expect(config.sources).toEqual([
      { name: 'builtin', path: builtinProfilesDir() },
      { name: 'local', path: join(root, 'etc', 'profiles') },
      { name: 'mnt', glob: '/mnt/*/corral' },
    ]);
    expect(config.watch.debounceMs).toBe(300);
    expect(config.watch.resyncSeconds).toBe(120);
    expect(config.watch.events).toBe(true);
    // The GitLab defaults: prepare waits 10 minutes for a free runner; a claim goes stale after 6 hours.
    expect(config.ci.claimWaitSeconds).toBe(600);
    expect(config.ci.maxJobSeconds).toBe(6 * 3600);
  });

  it('watch.events: false turns guest events off; anything but a boolean is an error', async () => {
    const root = await tempRoot();
    const off = await aHostConfig(root)
      .set({ watch: { events: false } })
      .write();
    expect((await loadConfig(off)).config.watch.events).toBe(false);
    const bad = await aHostConfig(root)
      .set({ watch: { events: 'yes' } })
      .write();
    await expect(loadConfig(bad)).rejects.toThrow(/invalid host config/);
  });

  it('a wrong type is a ConfigError with a pointer', async () => {
    const root = await tempRoot();
    const file = await aHostConfig(root).set({ keepTemplates: 'two' }).write();
    const error = await loadConfig(file).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toContainEqual(
      expect.objectContaining({ file, where: '/keepTemplates', message: 'must be integer' }),
    );
  });

  it('lookup order: --config, then $CORRAL_CONFIG, then ./corral.yaml', async () => {
    const cwd = await tempRoot();
    expect(findConfigFile('x.yaml', { CORRAL_CONFIG: '/env.yaml' }, cwd)).toBe(join(cwd, 'x.yaml'));
    expect(findConfigFile(undefined, { CORRAL_CONFIG: '/env.yaml' }, cwd)).toBe('/env.yaml');
    await mkdir(join(cwd, 'sub'));
    await aHostConfig(join(cwd, 'sub')).write();
    expect(findConfigFile(undefined, {}, join(cwd, 'sub'))).toBe(join(cwd, 'sub', 'corral.yaml'));
  });
});

describe('server.listen', () => {
  it('defaults to 127.0.0.1:8470 and resolves tokenFile against the config file', async () => {
    const root = await tempRoot();
    const { config: defaults } = await loadConfig(await aHostConfig(root).write());
    expect(defaults.server).toEqual({ host: '127.0.0.1', port: 8470 });
    const { config } = await loadConfig(
      await aHostConfig(root)
        .set({ server: { listen: ':9000', tokenFile: 'tok' } })
        .write(),
    );
    expect(config.server).toEqual({ host: '0.0.0.0', port: 9000, tokenFile: join(root, 'tok') });
  });

  it('parses host:port, [v6]:port, :port and a bare port; rejects the rest', () => {
    expect(parseListen('10.0.0.5:80')).toEqual({ host: '10.0.0.5', port: 80 });
    expect(parseListen('[::1]:8470')).toEqual({ host: '::1', port: 8470 });
    expect(parseListen('8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseListen('0')).toEqual({ host: '127.0.0.1', port: 0 });
    for (const bad of ['', 'host', 'a b:80', '1.2.3.4:', ':70000', 'http://x:80'])
      expect(parseListen(bad), bad).toBeUndefined();
  });
});
