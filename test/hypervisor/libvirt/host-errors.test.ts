/**
 * What corral cannot read is the host's problem, said as such: a status record or console log
 * that is not corral's to read (as virtlogd's root:root 0600 files were) is a HostError naming
 * the file and the permission, never "no verdict". Runs the product as the unprivileged user
 * `corral`, since root may read anything.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asCorral } from '../../harness/libvirtd.js';
import { repoRoot } from '../../harness/repo-root.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'corral-perm-'));
  await chmod(dir, 0o755);
  for (const sub of ['status', 'logs']) await mkdir(join(dir, sub), { mode: 0o755 });
  await writeFile(join(dir, 'status', 'ci-rebuild-p@20260101T000000Z-aaaaaaaa.status'), 'ok\n', { mode: 0o600 });
  await writeFile(join(dir, 'logs', 'ci-runner-p.1.console.log'), 'boot\n', { mode: 0o600 });
  // An overlay as libvirt leaves it while a guest runs: given to the qemu user, not readable by corral.
  await writeFile(join(dir, 'overlay.qcow2'), Buffer.from('QFI\xfb'), { mode: 0o600 });
});
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Runs a snippet against the built product as user corral; prints the error's name and message. */
async function asCorralUser(body: string): Promise<string> {
  const dist = join(repoRoot(), 'dist');
  const script = `const { readVerdict } = await import('${dist}/hypervisor/libvirt/status.js');
const { createLibvirtHypervisor } = await import('${dist}/hypervisor/libvirt/libvirt-hypervisor.js');
const { pino } = await import('pino');
const { backingChain } = await import('${dist}/hypervisor/libvirt/qcow2.js');
try { ${body} } catch (e) { console.log(e.name + ': ' + e.message) }`;
  const [file, args] = asCorral(process.execPath, ['--input-type=module', '-e', script]);
  return (await execa(file, args, { cwd: repoRoot() })).stdout.trim();
}

describe('files corral may not read', () => {
  it('a status record: HostError naming the file and the permission, not "no verdict"', async () => {
    const file = join(dir, 'status', 'ci-rebuild-p@20260101T000000Z-aaaaaaaa.status');
    const out = await asCorralUser(`console.log(JSON.stringify(await readVerdict('${file}')))`);
    expect(out).toMatch(
      new RegExp(`^HostError: cannot read the status record ${file}: permission denied \\(EACCES\\) for uid \\d+$`),
    );
  });

  it('a console log: HostError naming the file and the permission', async () => {
    const hv = `createLibvirtHypervisor({ uri: 'test:///default', prefix: 'ci', imagesDir: '${dir}', log: pino({ level: 'silent' }), attachChannels: false })`;
    const out = await asCorralUser(`console.log(await ${hv}.consoleLog('ci-runner-p.1'))`);
    expect(out).toMatch(
      /^HostError: cannot read the console log \S+ci-runner-p\.1\.console\.log: permission denied \(EACCES\)/,
    );
  });

  it('a backing chain: HostError, never "no backing file" (which could let a disk in use be deleted)', async () => {
    const file = join(dir, 'overlay.qcow2');
    const out = await asCorralUser(`console.log(JSON.stringify(await backingChain('${file}')))`);
    expect(out).toMatch(/^HostError: cannot read the backing chain of \S+overlay\.qcow2: permission denied \(EACCES\)/);
  });
});
