/**
 * `corral watch` on a real, isolated libvirtd with the tiny profile under TCG: a runner destroyed
 * by hand is replaced within seconds because libvirt's lifecycle event triggers the pass — the
 * resync is 10 minutes here, so nothing else could explain it (docs/design.md, "Events and requeue").
 * Then libvirtd restarts under the running watch: the event stream reconnects and still works.
 */
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLibvirtd, type Libvirtd } from '../harness/libvirtd.js';
import { ensureTinyBuilt, TINY_DIR } from '../harness/tiny-profile.js';
import { startWatch, stopWatch, waitFor, type Watch } from '../watch/harness.js';

let libvirtd: Libvirtd;
let root: string;
let watch: Watch;

const virsh = async (...args: string[]) => (await execa('virsh', ['-c', libvirtd.uri, ...args])).stdout;
const running = async () =>
  (await virsh('list', '--state-running', '--name'))
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith('ci-runner-tiny.'));

beforeAll(async () => {
  await ensureTinyBuilt();
  libvirtd = await startLibvirtd();
  root = await mkdtemp(join(tmpdir(), 'corral-watch-lv-'));
  const profile = join(root, 'profiles', 'tiny');
  await mkdir(profile, { recursive: true });
  await cp(join(TINY_DIR, 'build'), join(profile, 'build'), { recursive: true });
  await cp(join(TINY_DIR, 'provision'), join(profile, 'provision'), { recursive: true });
  await writeFile(
    join(profile, 'profile.yaml'),
    `runners: 2
base: { file: build/base.qcow2 }
guest: { cpus: 1, memory: 128, kernel: build/vmlinuz, initrd: build/initrd.img, cmdline: "console=ttyS0 quiet" }
provision: { dir: provision, entry: provision.sh, timeout: 120 }
`,
  );
  const config = join(root, 'corral.yaml');
  await writeFile(
    config,
    [
      'builtinProfiles: false',
      'stateDir: state',
      'imagesDir: images',
      'hypervisor: libvirt',
      `libvirt: { uri: "${libvirtd.uri}", domainType: qemu }`,
      'concurrency: { builds: 1, clones: 2 }',
      'watch: { resync: 10m, debounce: 200ms }',
      'sources: [{ name: test, path: profiles }]',
      '',
    ].join('\n'),
  );
  watch = startWatch(
    { root, config, src: join(root, 'profiles'), stateDir: join(root, 'state'), cleanup: async () => {} },
    ['--hypervisor', 'libvirt'],
  );
  await waitFor(async () => (await running()).length === 2, 'the template and two runners', 280_000);
}, 300_000);

afterAll(async () => {
  if (watch) await stopWatch(watch);
  await libvirtd?.stop();
  await rm(root, { recursive: true, force: true });
});

/** Destroys a running runner by hand and returns how long until a runner of that name runs again. */
async function destroyAndTimeReplacement(name: string): Promise<number> {
  await waitFor(async () => (await running()).length === 2, 'two running runners', 60_000);
  const before = (await virsh('domuuid', name)).trim();
  const t0 = Date.now();
  await virsh('destroy', name);
  await waitFor(
    async () => (await running()).includes(name) && (await virsh('domuuid', name)).trim() !== before,
    `a replacement for ${name}`,
    30_000,
  );
  return Date.now() - t0;
}

describe('corral watch on libvirt: guest events', { timeout: 300_000 }, () => {
  it('replaces a runner destroyed by hand within seconds, five times, with no resync', async () => {
    const since = Date.now();
    const times: number[] = [];
    for (let i = 0; i < 5; i++)
      times.push(await destroyAndTimeReplacement(i % 2 ? 'ci-runner-tiny.2' : 'ci-runner-tiny.1'));
    for (const ms of times) expect(ms).toBeLessThan(10_000);
    expect(watch.passesSince(since, 'guest-event').length).toBeGreaterThanOrEqual(5);
    expect(watch.passesSince(since, 'resync')).toHaveLength(0);
  });

  it('survives a libvirtd restart: the event stream reconnects and a later shut-off is still seen', async () => {
    const since = Date.now();
    await libvirtd.restart();
    await waitFor(
      () => watch.logs.some((l) => l.time >= since && l.msg.startsWith('guest event stream is back')),
      'the event stream to reconnect',
      60_000,
    );
    expect(watch.logs.filter((l) => l.time >= since && l.msg.startsWith('guest event stream lost'))).toHaveLength(1);
    expect(watch.child.exitCode).toBeNull();
    const ms = await destroyAndTimeReplacement('ci-runner-tiny.1');
    expect(ms).toBeLessThan(10_000);
    expect(watch.passesSince(since, 'resync')).toHaveLength(0);
  });
});
