/** Issue 14, item 4: every error names what to fix, on one line, and in JSON with --json. */
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { aHostConfig, aProfileDir, cleanup, corral, tempRoot } from '../builders/profile-dir.js';
import { cli, guestNames, strayLines } from './world.js';

afterEach(cleanup);

async function aHost(): Promise<{ root: string; config: string }> {
  const root = await tempRoot('corral-errors-');
  await aProfileDir(join(root, 'local'), 'web').runners(2).write();
  return { root, config: await aHostConfig(root).source('local', 'local').write() };
}

describe('an unusable stateDir names the config key and the path', () => {
  it('a file where the state dir should be', async () => {
    const root = await tempRoot();
    await writeFile(join(root, 'state'), '');
    const config = await aHostConfig(root).write();
    for (const args of [['compile'], ['reconcile', '--once']]) {
      const r = await cli([...args, '--config', config]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).not.toContain('internal error');
      expect(r.stderr).toContain(`stateDir ${join(root, 'state')} is unusable: a file is in the way`);
      expect(r.stderr).toContain(`${config}#/stateDir: set "stateDir" to a writable directory`);
    }
  });
});

describe('--config with an empty value', () => {
  for (const args of [['--config', ''], ['--config=']]) {
    it(`${JSON.stringify(args)} is an error, not the default config`, async () => {
      const root = await tempRoot();
      await writeFile(join(root, 'corral.yaml'), 'builtinProfiles: false\nhypervisor: memory\n');
      const r = await cli(['validate', ...args], { CORRAL_CONFIG: '' });
      const viaCwd = await corral(['validate', ...args, '--json'], { cwd: root });
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain('--config needs a file name');
      expect(viaCwd.exitCode).toBe(1);
      expect(JSON.parse(viaCwd.stdout)).toMatchObject({ ok: false, error: { kind: 'usage' } });
    });
  }
});

describe('--json prints a JSON error object on stdout for every failure', () => {
  it('sources, compile, plan, reconcile with broken sources; any command with a bad config', async () => {
    const h = await aHost();
    await writeFile(join(h.root, 'local', 'web', 'profile.yaml'), 'runners: many\nbase: {file: base.img}\n');
    for (const args of [['sources'], ['compile'], ['plan'], ['status'], ['reconcile', '--once']]) {
      const r = await cli([...args, '--json', '--config', h.config]);
      expect(r.exitCode, args.join(' ')).toBe(1);
      const out = JSON.parse(r.stdout) as { ok: boolean; error: { kind: string; problems: { where: string }[] } };
      expect(out, args.join(' ')).toMatchObject({ ok: false, error: { kind: 'config' } });
      expect(out.error.problems.map((p) => p.where)).toContain('/runners');
    }
    await writeFile(h.config, 'stateDir: [1, 2]\n');
    for (const args of [['plan'], ['sources'], ['compile'], ['validate']]) {
      const r = await cli([...args, '--json', '--config', h.config]);
      expect(r.exitCode).toBe(1);
      expect(JSON.parse(r.stdout)).toMatchObject({
        ok: false,
        error: { kind: 'config', problems: [{ where: '/stateDir' }] },
      });
    }
    const unknown = await cli(['frobnicate', '--json']);
    expect(JSON.parse(unknown.stdout)).toMatchObject({ ok: false, error: { kind: 'usage' } });
  });
});

describe('names in problems', () => {
  it('a newline in a name does not split a problem over two lines', async () => {
    const h = await aHost();
    await aProfileDir(join(h.root, 'local'), 'evil\nwarning: all good').write();
    const r = await corral(['validate', '--config', h.config]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('evil\\nwarning: all good');
    expect(strayLines(r.stderr, h.root)).toEqual([]);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('warning: all good'))).toEqual([]);
  });

  it('a provision file whose name is not UTF-8 is reported as such, not "not found"', async () => {
    const h = await aHost();
    const dir = join(h.root, 'local', 'web', 'provision');
    await writeFile(Buffer.concat([Buffer.from(`${dir}/setup`), Buffer.from([0xff]), Buffer.from('.sh')]), 'x');
    const r = await cli(['validate', '--config', h.config]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('#/provision/dir: a name that is not valid UTF-8: setup\\xff.sh (rename it)');
    expect(r.stderr).not.toContain('not found');
  });

  it('a FIFO or a socket in the provision dir is rejected by name', async () => {
    const h = await aHost();
    const dir = join(h.root, 'local', 'web', 'provision');
    await mkdir(join(dir, 'sub'));
    await execa('mkfifo', [join(dir, 'sub', 'pipe')]);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir, 'sock'), resolve));
    try {
      const r = await cli(['validate', '--config', h.config]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toContain('#/provision/dir: a FIFO cannot go onto the seed disk: sub/pipe');
      expect(r.stderr).toContain('#/provision/dir: a socket cannot go onto the seed disk: sock');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('a foreign guest on a runner name', () => {
  it('is reported as unrecognized with a failing exit, and corral creates its runners under other names', async () => {
    const h = await aHost();
    await mkdir(join(h.root, 'state'));
    await writeFile(
      join(h.root, 'state', 'memory-hypervisor.json'),
      JSON.stringify({ guests: [{ name: 'ci-runner-web.1', state: 'running', disks: [], console: [] }], backing: {} }),
    );
    for (let run = 0; run < 2; run++) {
      const r = await cli(['reconcile', '--once', '--config', h.config]);
      expect(r.exitCode).toBe(1);
      expect(r.stdout).toContain('? ci-runner-web.1: no corral metadata; it holds a name corral would use');
      expect(r.stdout).not.toContain('FAILED');
      expect(r.stderr).toContain("1 guest(s) not created by corral hold corral's names (ci-runner-web.1)");
    }
    expect((await guestNames(join(h.root, 'state'))).filter((n) => n.startsWith('ci-runner'))).toEqual([
      'ci-runner-web.1',
      'ci-runner-web.2',
      'ci-runner-web.3',
    ]);
  });
});

describe('filesystem errors under stateDir or imagesDir', () => {
  it('become a config error naming the key, the path and the config file', async () => {
    const { namePaths } = await import('../../src/cli/config-paths.js');
    const config = { file: '/etc/corral/config.yaml', stateDir: '/var/lib/corral/state', imagesDir: '/srv/images' };
    const erofs = Object.assign(new Error('EROFS: read-only file system'), {
      code: 'EROFS',
      path: '/srv/images/templates',
    });
    const named = namePaths(erofs, config as never) as Error & { problems: { file: string; where: string }[] };
    expect(named.message).toBe(
      'imagesDir /srv/images is unusable: it is on a read-only filesystem (EROFS at /srv/images/templates)',
    );
    expect(named.problems).toEqual([expect.objectContaining({ file: '/etc/corral/config.yaml', where: '/imagesDir' })]);
    const elsewhere = Object.assign(new Error('x'), { code: 'ENOENT', path: '/tmp/other' });
    expect(namePaths(elsewhere, config as never)).toBe(elsewhere);
  });
});
