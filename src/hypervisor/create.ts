import type { Logger } from 'pino';
import type { HostConfig } from '../config/host-config.js';
import type { Hypervisor } from './hypervisor.js';
import { openMemoryHypervisor } from './memory/memory-store.js';

/** The backend the host config (or --hypervisor) selects. */
export async function createHypervisor(
  config: HostConfig,
  deps: {
    log: Logger;
    clock: () => Date;
    env: NodeJS.ProcessEnv;
    readOnly?: boolean;
    /** Connect to guests' channels (only the state-dir lock holder may: a socket serves one client). */
    attachChannels?: boolean;
  },
): Promise<Hypervisor> {
  if (config.hypervisor === 'memory') {
    return openMemoryHypervisor({
      stateDir: config.stateDir,
      prefix: config.prefix,
      clock: deps.clock,
      env: deps.env,
      ...(deps.readOnly ? { readOnly: true } : {}),
    });
  }
  // Loaded on demand: the XML and process libraries are not needed with the memory backend.
  const { createLibvirtHypervisor } = await import('./libvirt/libvirt-hypervisor.js');
  return createLibvirtHypervisor({
    uri: config.libvirtUri,
    prefix: config.prefix,
    imagesDir: config.imagesDir,
    log: deps.log,
    domainType: config.libvirtDomainType,
    attachChannels: deps.attachChannels === true,
  });
}
