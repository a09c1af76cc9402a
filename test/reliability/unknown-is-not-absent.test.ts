/**
 * Issue 14, item 1: what corral cannot read is never taken for "removed", and a missing source
 * keeps its profiles for watch.absentGrace in every mode, cron included.
 */
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, aHostConfig, aProfileDir, cleanup, tempRoot } from '../builders/profile-dir.js';
import { loadConfig } from '../builders/profile-dir.js';
import { FileDigests } from '../../src/sources/inputs.js';
import { refreshView } from '../../src/reconcile/refresh-view.js';
import { AbsenceTracker } from '../../src/watch/absence.js';
import { aReconciledHost, cli, guestNames } from './world.js';

afterEach(cleanup);

describe('an unreadable profile is a problem, never a removal', () => {
  it('a profile dir that is a symlink loop: validate fails, reconcile keeps every guest', async () => {
    const h = await aReconciledHost();
    const before = await guestNames(h.stateDir);
    await rm(join(h.root, 'local', 'web'), { recursive: true });
    await symlink('web', join(h.root, 'local', 'web'));
    const validate = await cli(['validate', '--config', h.config]);
    expect(validate.exitCode).toBe(1);
    expect(validate.stderr).toContain(`${join(h.root, 'local', 'web')}: a symlink that cannot be followed (ELOOP)`);
    const reconcile = await cli(['reconcile', '--once', '--config', h.config]);
    expect(reconcile.exitCode).toBe(1);
    expect(await guestNames(h.stateDir)).toEqual(before);
  });

  it('profile.yml instead of profile.yaml: an error that says so, and nothing is destroyed', async () => {
    const h = await aReconciledHost();
    const before = await guestNames(h.stateDir);
    const dir = join(h.root, 'local', 'web');
    await rename(join(dir, 'profile.yaml'), join(dir, 'profile.yml'));
    const validate = await cli(['validate', '--config', h.config]);
    expect(validate.exitCode).toBe(1);
    expect(validate.stderr).toContain(`${dir}: no profile.yaml (found "profile.yml": rename it to profile.yaml)`);
    expect((await cli(['reconcile', '--once', '--config', h.config])).exitCode).toBe(1);
    expect(await guestNames(h.stateDir)).toEqual(before);
  });

  it('a profile dir whose name is not UTF-8 is reported as such, not skipped', async () => {
    const h = await aReconciledHost();
    await mkdir(Buffer.concat([Buffer.from(`${join(h.root, 'local')}/we`), Buffer.from([0xff])]));
    const validate = await cli(['validate', '--config', h.config]);
    expect(validate.exitCode).toBe(1);
    expect(validate.stderr).toContain(`${join(h.root, 'local')}/we\\xff: the name is not valid UTF-8`);
  });

  it.skipIf(process.getuid?.() === 0)(
    'a profile dir corral may not read (0700, another user) is a problem',
    async () => {
      const h = await aReconciledHost();
      const { chmod } = await import('node:fs/promises');
      await chmod(join(h.root, 'local', 'web'), 0o000);
      try {
        const validate = await cli(['validate', '--config', h.config]);
        expect(validate.exitCode).toBe(1);
        expect(validate.stderr).toContain('cannot read the profile dir (EACCES)');
      } finally {
        await chmod(join(h.root, 'local', 'web'), 0o755);
      }
    },
  );
});

describe('a missing source keeps its profiles for absentGrace, under cron too', () => {
  it('held while within the grace (recorded in the state dir), removed after it, and says so', async () => {
    const h = await aReconciledHost();
    const before = await guestNames(h.stateDir);
    await rename(join(h.root, 'usb'), join(h.root, 'usb-unmounted'));
    const held = await cli(['reconcile', '--once', '--config', h.config]);
    expect(held.exitCode, held.stderr).toBe(0);
    expect(held.stderr).toMatch(
      new RegExp(`kept: source "usb" ${join(h.root, 'usb')} absent since (\\S+) \\(grace until (\\S+)\\)`),
    );
    expect(await guestNames(h.stateDir)).toEqual(before);
    const record = JSON.parse(await readFile(join(h.stateDir, 'sources-absent.json'), 'utf8')) as {
      absent: Record<string, { source: string; since: string }>;
    };
    const since = record.absent[join(h.root, 'usb')]?.since ?? '';
    expect(record.absent[join(h.root, 'usb')]?.source).toBe('usb');

    // plan shows the hold, with the same since as the record (cron runs count from one moment).
    const plan = await cli(['plan', '--config', h.config]);
    expect(plan.stdout).toContain(`kept: source "usb" ${join(h.root, 'usb')} absent since ${since} (grace until `);
    expect(plan.stdout).not.toMatch(/destroy-runner|retire-template/);
    const json = JSON.parse((await cli(['plan', '--json', '--config', h.config])).stdout) as {
      kept: { source: string; since: string; graceUntil: string }[];
    };
    expect(json.kept).toEqual([
      {
        source: 'usb',
        dir: join(h.root, 'usb'),
        since,
        graceUntil: new Date(Date.parse(since) + 3600_000).toISOString(),
      },
    ]);

    const status = await cli(['status', '--config', h.config]);
    expect(status.stdout).toContain(
      `source "usb" ${join(h.root, 'usb')} is absent since ${since}; its profiles stay until`,
    );

    // A shorter grace that has run out: removal proceeds, and says why.
    await h.host.set({ watch: { absentGrace: '1s' } }).write();
    await new Promise((r) => setTimeout(r, 1100));
    const removed = await cli(['reconcile', '--once', '--config', h.config]);
    expect(removed.exitCode, removed.stderr).toBe(0);
    expect(removed.stderr).toContain(`source "usb" ${join(h.root, 'usb')} absent since ${since}; the grace ended at`);
    expect((await guestNames(h.stateDir)).filter((n) => n.includes('-db'))).toEqual([]);
    expect(await guestNames(h.stateDir)).toContain('ci-runner-web.2');
  });

  it('a mistyped path keeps the profiles the source had', async () => {
    const h = await aReconciledHost();
    const before = await guestNames(h.stateDir);
    await aHostConfig(h.root)
      .source('local', 'local')
      .source('usb', 'ubs')
      .set({ watch: { absentGrace: '1h' } })
      .write();
    const run = await cli(['reconcile', '--once', '--config', h.config]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toContain(`kept: source "usb" ${join(h.root, 'usb')} absent since`);
    expect(await guestNames(h.stateDir)).toEqual(before);
  });

  it('a glob source that matches nothing (partition unmounted) keeps its profiles', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'mnt', 'disk1', 'profiles'), 'ci')
      .runners(1)
      .write();
    const config = await aHostConfig(root).glob('parts', 'mnt/*/profiles').write();
    expect((await cli(['reconcile', '--once', '--config', config])).exitCode).toBe(0);
    const stateDir = join(root, 'state');
    const before = await guestNames(stateDir);
    expect(before).toContain('ci-runner-ci.1');
    await rm(join(root, 'mnt', 'disk1'), { recursive: true });
    const run = await cli(['reconcile', '--once', '--config', config]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toContain(`kept: source "parts" ${join(root, 'mnt', 'disk1', 'profiles')} absent since`);
    expect(await guestNames(stateDir)).toEqual(before);
  });

  it('a source taken out of the host config is removed on purpose: no grace', async () => {
    const h = await aReconciledHost();
    await aHostConfig(h.root)
      .source('local', 'local')
      .set({ watch: { absentGrace: '1h' } })
      .write();
    const run = await cli(['reconcile', '--once', '--config', h.config]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect((await guestNames(h.stateDir)).filter((n) => n.includes('-db'))).toEqual([]);
  });

  it('the watch counts from the moment a cron run recorded, and records for the next one', async () => {
    const h = await aReconciledHost();
    await rename(join(h.root, 'usb'), join(h.root, 'usb-unmounted'));
    const { config, validators } = await loadConfig(h.config);
    const t0 = new Date('2030-01-01T00:00:00Z');
    const cron = await refreshView(config, { validators, digests: new FileDigests(), now: t0 });
    expect(cron.accepted).toBe(false);
    expect(cron.absence.holding.map((x) => x.graceUntil)).toEqual([new Date(t0.getTime() + 3600_000)]);
    const watch = new AbsenceTracker(3600_000, h.stateDir);
    await watch.load();
    const later = await watch.observe(
      [{ dir: join(h.root, 'usb'), source: 'usb' }],
      new Set(),
      () => true,
      t0.getTime() + 60_000,
    );
    expect(later.absentSince).toEqual({ [join(h.root, 'usb')]: t0.toISOString() });
    expect(later.nextExpiry).toBe(t0.getTime() + 3600_000);
  });

  it('--config /dev/stdin resolves relative paths where corral runs, not under /dev', async () => {
    const root = await tempRoot();
    await aProfileDir(join(root, 'local'), 'web').write();
    await writeFile(
      join(root, 'piped.yaml'),
      'builtinProfiles: false\nhypervisor: memory\nsources:\n  - {name: local, path: local}\n',
    );
    // Through a real pipe, as `generate-config | corral validate --config /dev/stdin` would.
    const r = await execa(
      'sh',
      ['-c', `cat piped.yaml | "${process.execPath}" "${BIN}" validate --config /dev/stdin`],
      {
        cwd: root,
        reject: false,
        env: { CORRAL_LOG_LEVEL: 'warn', CORRAL_CONFIG: '' },
      },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('ok: 1 profile(s)');
  });
});
