/**
 * The host config every real-libvirtd test starts from: profiles from `<root>/profiles` only,
 * state and images under `root`, the test's own libvirtd with TCG. `extra` lines (YAML, one key
 * each) add what a test needs on top.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function writeHostConfig(root: string, libvirtUri: string, extra: string[] = []): Promise<string> {
  const file = join(root, 'corral.yaml');
  const lines = [
    'builtinProfiles: false',
    'stateDir: state',
    'imagesDir: images',
    'hypervisor: libvirt',
    `libvirt: { uri: "${libvirtUri}", domainType: qemu }`,
    'sources: [{ name: test, path: profiles }]',
    ...extra,
  ];
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}
