/** The per-runner cidata seed: its files, its label and its mode on the host. */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execaExec } from '../../../src/exec/exec.js';
import { buildRunnerSeed, runnerSeedFiles } from '../../../src/hypervisor/libvirt/seed.js';

const id = { name: 'ci-runner-web.3', profile: 'web', labels: { os: 'debian', arch: 'x86_64' }, host: 'ci-host-1' };
let dir: string;
beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), 'corral-seed-'))));
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('runner seed', () => {
  it('names the instance and host after the runner and carries corral/ facts', () => {
    expect(runnerSeedFiles(id)).toEqual({
      'meta-data': 'instance-id: ci-runner-web.3\nlocal-hostname: ci-runner-web-3\n',
      'user-data': '#cloud-config\n{}\n',
      'corral/name': 'ci-runner-web.3\n',
      'corral/profile': 'web\n',
      'corral/labels': 'arch=x86_64\nos=debian\n',
      'corral/host': 'ci-host-1\n',
    });
    expect(runnerSeedFiles({ ...id, extra: { 'github/jit-config': 'secret' } })['corral/github/jit-config']).toBe(
      'secret',
    );
    expect(() => runnerSeedFiles({ ...id, extra: { '../escape': 'x' } })).toThrow(/bad seed file name/);
  });

  it('is an ISO9660 image labelled cidata, mode 0600 on the host', async () => {
    const iso = join(dir, 'seed.iso');
    await buildRunnerSeed(execaExec, id, iso);
    expect((await stat(iso)).mode & 0o777).toBe(0o600);
    const pvd = (await execa('isoinfo', ['-d', '-i', iso])).stdout;
    expect(pvd).toMatch(/Volume id: cidata/);
    const listing = (await execa('isoinfo', ['-R', '-f', '-i', iso])).stdout.split('\n').sort();
    expect(listing).toEqual(
      [
        '/corral',
        '/corral/host',
        '/corral/labels',
        '/corral/name',
        '/corral/profile',
        '/meta-data',
        '/user-data',
      ].sort(),
    );
    const meta = (await execa('isoinfo', ['-R', '-i', iso, '-x', '/meta-data'])).stdout;
    expect(meta).toBe('instance-id: ci-runner-web.3\nlocal-hostname: ci-runner-web-3');
  });
});
