/**
 * The whole lifecycle through the real `corral` binary against a real, isolated libvirtd booting
 * real TCG guests (docs/design.md, "Tests"). Scenarios run in order on one host, as an operator would meet them.
 * Run in two sandbox modes (lifecycle*.e2e.test.ts): today's (qemu as root, no security driver,
 * corral as root) and stock (Debian's packaged qemu.conf with virtlogd and DAC relabelling,
 * corral as the unprivileged user `corral` in group libvirt).
 */
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeHostConfig } from '../harness/host-config.js';
import { asCorral, startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { ensureTinyBuilt, TINY_DIR } from '../harness/tiny-profile.js';
import { spawnServer } from '../server/serve-harness.js';

const BIN = join(import.meta.dirname, '../../bin/corral.js');

export function lifecycleSuite(mode: 'sandbox' | 'stock'): void {
  let libvirtd: Libvirtd;
  let root: string;
  const profileDir = () => join(root, 'profiles', 'tiny');
  const stock = mode === 'stock';

  beforeAll(async () => {
    await ensureTinyBuilt();
    libvirtd = await startLibvirtd({ stock });
    root = await mkdtemp(join(tmpdir(), 'corral-e2e-'));
    await mkdir(join(profileDir(), 'provision'), { recursive: true });
    await cp(join(TINY_DIR, 'build'), join(profileDir(), 'build'), { recursive: true });
    await cp(join(TINY_DIR, 'provision'), join(profileDir(), 'provision'), { recursive: true });
    await writeProfile({ runners: 2 });
    await writeHostConfig(root, libvirtd.uri, [
      'keepTemplates: 1',
      'concurrency: { builds: 1, clones: 4 }',
      'rebuild: { backoffInitial: 1s, backoffMax: 2s }',
    ]);
    // A guest that is not corral's, and one with our prefix that corral did not make: both must survive everything.
    for (const name of ['build-server', 'ci-handmade']) {
      const xml = `<domain type='qemu'><name>${name}</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>`;
      await writeFile(join(root, `${name}.xml`), xml);
      await virsh('define', join(root, `${name}.xml`));
    }
    if (stock) {
      // As on a real host: corral owns its tree; qemu (libvirt-qemu) may traverse to the disks.
      await execa('chown', ['-R', 'corral:corral', root]);
      await chmod(root, 0o711);
    }
  }, 300_000);

  afterAll(async () => {
    await libvirtd?.stop();
    await rm(root, { recursive: true, force: true });
  });

  async function writeProfile(opts: { runners: number; timeout?: number }): Promise<void> {
    const yaml = `runners: ${opts.runners}
base: { file: build/base.qcow2 }
guest: { cpus: 1, memory: 128, kernel: build/vmlinuz, initrd: build/initrd.img, cmdline: "console=ttyS0 quiet" }
provision: { dir: provision, entry: provision.sh, timeout: ${opts.timeout ?? 90} }
`;
    await writeFile(join(profileDir(), 'profile.yaml'), yaml);
  }

  function corral(args: string[]): ResultPromise<{ reject: false }> {
    const [file, argv] = stock
      ? asCorral(process.execPath, [BIN, ...args, '--config', join(root, 'corral.yaml')])
      : ['node', [BIN, ...args, '--config', join(root, 'corral.yaml')]];
    return execa(file, argv, { reject: false, env: { CORRAL_LOG_LEVEL: 'warn', HOME: root } });
  }

  /** Runners whose guest said ready (not booting, not busy): what a CI system could use right now. */
  async function readyRunners(): Promise<string[]> {
    const ready: string[] = [];
    for (const name of runners(await guests('running'))) {
      const said = await readFile(join(root, 'images', 'status', `${name}.status`), 'utf8').catch(() => '');
      const last = said
        .split('\n')
        .filter((l) => ['ready', 'busy', 'idle'].includes(l.trim()))
        .at(-1);
      if (last === 'ready' || last === 'idle') ready.push(name);
    }
    return ready;
  }

  async function virsh(...args: string[]): Promise<string> {
    return (await execa('virsh', ['-c', libvirtd.uri, ...args])).stdout;
  }

  async function guests(state: 'all' | 'running' = 'all'): Promise<string[]> {
    return (await virsh('list', state === 'all' ? '--all' : '--state-running', '--name'))
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean)
      .sort();
  }

  const runners = (names: string[]) => names.filter((n) => n.startsWith('ci-runner-tiny.'));
  const templates = (names: string[]) => names.filter((n) => n.startsWith('ci-template-tiny@'));

  async function inSync(): Promise<void> {
    const plan = await corral(['plan', '--detailed-exitcode']);
    expect(plan.exitCode, plan.stdout + plan.stderr).toBe(0);
  }

  async function bakedOn(runner: string): Promise<string> {
    const log = join(root, 'images', 'logs', `${runner}.console.log`);
    for (let i = 0; i < 120; i++) {
      const text = existsSync(log) ? await readFile(log, 'utf8') : '';
      const match = /corral-runner: (.*)/.exec(text);
      if (match?.[1]) return match[1].trim();
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`${runner} never printed what its template baked`);
  }

  /** Samples ready runners while `work` runs; returns the smallest count seen. */
  async function minReadyDuring(work: Promise<unknown>): Promise<number> {
    let min = Infinity;
    let done = false;
    void work.finally(() => (done = true));
    while (!done) {
      min = Math.min(min, (await readyRunners()).length);
      await new Promise((r) => setTimeout(r, 150));
    }
    await work;
    return min;
  }

  async function imageFiles(): Promise<string[]> {
    const dir = join(root, 'images');
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
      .sort();
  }

  // Each scenario boots real guests under TCG on a 2-core machine: minutes, not seconds.
  describe(
    `corral on a real libvirtd (${stock ? 'stock qemu.conf, corral as user corral' : 'sandbox mode'})`,
    { timeout: 300_000 },
    () => {
      it('1. fresh host → one pass promotes a template and starts runners that run the built image', async () => {
        const result = await corral(['reconcile', '--once']);
        expect(result.exitCode, result.stdout + result.stderr).toBe(0);
        const names = await guests();
        expect(templates(names)).toHaveLength(1);
        expect(runners(await guests('running'))).toEqual(['ci-runner-tiny.1', 'ci-runner-tiny.2']);
        expect(await virsh('domstate', templates(names)[0]!)).toMatch(/shut off/);
        await inSync();
        for (const r of ['ci-runner-tiny.1', 'ci-runner-tiny.2'])
          expect(await bakedOn(r)).toBe('tiny hello v1 (from tiny 1)');
        // reconcile --once waited for them to say ready; each took its own name from its own seed.
        expect(await readyRunners()).toEqual(['ci-runner-tiny.1', 'ci-runner-tiny.2']);
        const log = await readFile(join(root, 'images', 'logs', 'ci-runner-tiny.2.console.log'), 'utf8');
        expect(log).toContain('corral-identity: host=ci-runner-tiny-2');
        const status = await corral(['status']);
        expect(status.stdout).toMatch(/runners: 2\/2 ready/);
        expect(status.stdout).toContain('ci-runner-tiny.1 ready, ci-runner-tiny.2 ready');
      });

      it('1b. the console reads the real host: profiles, runners, their consoles, the build log, metrics', async () => {
        const served = await spawnServer(join(root, 'corral.yaml'), ['serve', '--listen', '127.0.0.1:0']);
        try {
          const status = (await (await served.get('/api/v1/status')).json()) as {
            hypervisor: string;
            profiles: {
              name: string;
              template: { current: boolean } | null;
              runners: { ready: number; desired: number };
              lastBuild: { name: string; status: string } | null;
            }[];
            unrecognized: { name: string }[];
          };
          expect(status.hypervisor).toBe('libvirt');
          expect(status.profiles).toEqual([
            expect.objectContaining({
              name: 'tiny',
              template: expect.objectContaining({ current: true }),
              runners: expect.objectContaining({ ready: 2, desired: 2 }),
            }),
          ]);
          expect(status.unrecognized.map((u) => u.name)).toContain('ci-handmade');
          const runnerLog = await (await served.get('/api/v1/runners/ci-runner-tiny.1/log')).text();
          expect(runnerLog).toContain('corral-runner: tiny hello v1');
          const build = status.profiles[0]!.lastBuild!;
          expect(build.status).toBe('succeeded');
          const buildLog = await served.get(`/api/v1/builds/${encodeURIComponent(build.name)}/log`);
          expect(buildLog.status).toBe(200);
          expect((await buildLog.text()).length).toBeGreaterThan(0);
          expect(await (await served.get('/metrics')).text()).toMatch(/^corral_runners_ready\{profile="tiny"\} 2$/m);
        } finally {
          expect(await served.stop()).toBe(0);
        }
      });

      it('6. guests corral does not own survive every pass untouched', async () => {
        const names = await guests();
        expect(names).toContain('build-server');
        expect(names).toContain('ci-handmade');
        const status = await corral(['status']);
        expect(status.stdout).toMatch(/\? ci-handmade: .* \(left alone\)/);
      });

      it('7. runner count 3 → 1 → 3', async () => {
        await writeProfile({ runners: 3 });
        expect((await corral(['reconcile', '--once'])).exitCode).toBe(0);
        expect(runners(await guests('running'))).toEqual(['ci-runner-tiny.1', 'ci-runner-tiny.2', 'ci-runner-tiny.3']);
        await writeProfile({ runners: 1 });
        expect((await corral(['reconcile', '--once'])).exitCode).toBe(0);
        expect(runners(await guests())).toEqual(['ci-runner-tiny.1']);
        // The destroyed runners' console logs are kept (the last 20 per profile), corral's to read.
        const kept = await readdir(join(root, 'state', 'runner-logs', 'tiny'));
        const log3 = kept.find((f) => f.startsWith('ci-runner-tiny.3.'));
        expect(log3, kept.join(', ')).toMatch(/^ci-runner-tiny\.3\.\d{8}T\d{6}Z\.console\.log$/);
        expect(await readFile(join(root, 'state', 'runner-logs', 'tiny', log3!), 'utf8')).toContain(
          'corral-identity: host=ci-runner-tiny-3',
        );
        await writeProfile({ runners: 3 });
        expect((await corral(['reconcile', '--once'])).exitCode).toBe(0);
        expect(runners(await guests('running'))).toHaveLength(3);
        await inSync();
      });

      it('4. a provision change promotes a new template, rolls runners with a ready runner at every moment, retires the old one', async () => {
        const before = templates(await guests());
        await writeFile(join(profileDir(), 'provision', 'message'), 'hello v2\n');
        const min = await minReadyDuring(corral(['reconcile', '--once']));
        expect(min).toBeGreaterThan(0);
        const after = await guests();
        expect(templates(after)).toHaveLength(1); // keepTemplates: 1
        expect(templates(after)).not.toEqual(before);
        const live = runners(await guests('running'));
        expect(live).toHaveLength(3);
        for (const r of live) expect(await bakedOn(r)).toBe('tiny hello v2 (from tiny 1)');
        await inSync();
      });

      it('2. a failing provision script: rebuild destroyed with its disks, live template and runners untouched, back-off', async () => {
        const before = await guests();
        const filesBefore = await imageFiles();
        await writeFile(
          join(profileDir(), 'provision', 'provision.sh'),
          '#!/bin/sh\necho "cannot install things" >&2\nexit 3\n',
        );
        const result = await corral(['reconcile', '--once']);
        expect(result.exitCode, result.stderr).toBe(0);
        expect(result.stdout).toMatch(/FAILED build ci-rebuild-tiny@\S+: provision.sh exited with status 3/);
        // The guest and its disks are gone, but its console output is kept to say why.
        const kept = /console log: (\S+console\.log)\)/.exec(result.stdout)?.[1];
        expect(kept).toBeDefined();
        expect(await readFile(kept!, 'utf8')).toContain('cannot install things');
        expect(result.stdout).toMatch(/waiting tiny: .*backing off after 1 failed build/);
        expect(await guests()).toEqual(before);
        expect(runners(await guests('running'))).toHaveLength(3);
        expect(await imageFiles()).toEqual(filesBefore);
        const events = (await readFile(join(root, 'state', 'events.jsonl'), 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { action: string; ok: boolean });
        expect(events.at(-1)).toMatchObject({ action: 'build', ok: false });
        // Provenance: history lists the failure beside the successes, logs replay its console.
        const history = JSON.parse((await corral(['history', 'tiny', '--json'])).stdout) as {
          builds: { template: string; verdict: string; failure: string | null }[];
        };
        expect(history.builds.map((b) => b.verdict)).toEqual(['ok', 'ok', 'failed']);
        expect(history.builds[2]?.failure).toMatch(/provision.sh exited with status 3/);
        const logs = await corral(['logs', history.builds[2]!.template]);
        expect(logs.exitCode, logs.stderr).toBe(0);
        expect(logs.stdout).toContain('cannot install things');
      });

      it('3. a hanging provision script times out: same as a failure', async () => {
        await new Promise((r) => setTimeout(r, 2500)); // let the back-off expire
        const before = await guests();
        await writeFile(join(profileDir(), 'provision', 'provision.sh'), '#!/bin/sh\nsleep 100000\n');
        await writeProfile({ runners: 3, timeout: 20 });
        const result = await corral(['reconcile', '--once']);
        expect(result.exitCode, result.stderr).toBe(0);
        expect(result.stdout).toMatch(/FAILED build ci-rebuild-tiny@\S+: timed out after 20s/);
        expect(await guests()).toEqual(before);
        expect(runners(await guests('running'))).toHaveLength(3);
      });

      it('5. SIGKILL in the middle of a build: the next pass discards the orphan and starts over, leaking no files', async () => {
        await new Promise((r) => setTimeout(r, 2500));
        await writeFile(
          join(profileDir(), 'provision', 'provision.sh'),
          '#!/bin/sh\nset -eu\nmsg=$(cat ./message)\necho "tiny $msg (from $(cat "$1/etc/tiny-release"))" >"$1/baked"\n',
        );
        await writeFile(join(profileDir(), 'provision', 'message'), 'hello v3\n');
        await writeProfile({ runners: 3 });
        const child = corral(['reconcile', '--once']);
        for (let i = 0; i < 200 && !(await guests('running')).some((n) => n.startsWith('ci-rebuild-')); i++)
          await new Promise((r) => setTimeout(r, 100));
        const orphan = (await guests()).find((n) => n.startsWith('ci-rebuild-'));
        expect(orphan).toBeDefined();
        child.kill('SIGKILL');
        await child;
        const result = await corral(['reconcile', '--once']);
        expect(result.exitCode, result.stderr).toBe(0);
        expect(result.stdout).toContain(`ok     discard ${orphan}`);
        const names = await guests();
        expect(names.some((n) => n.startsWith('ci-rebuild-'))).toBe(false);
        expect(templates(names)).toHaveLength(1);
        for (const r of runners(await guests('running'))) expect(await bakedOn(r)).toBe('tiny hello v3 (from tiny 1)');
        // Every file under images/ belongs to a guest that exists (or is the base cache).
        const files = await imageFiles();
        const owners = new Set(names.map((n) => n.replace(/^ci-(template|rebuild)-/, '')));
        for (const file of files.filter((f) => !f.startsWith('base/'))) {
          const key = /^(?:[^/]+\/)+(.*?@\d{8}T\d{6}Z-[0-9a-f]{8}|ci-runner-tiny\.\d+)\./.exec(file)?.[1] ?? file;
          expect(owners.has(key) || names.includes(key), `leaked ${file}`).toBe(true);
        }
        await inSync();
      });
    },
  );
}
