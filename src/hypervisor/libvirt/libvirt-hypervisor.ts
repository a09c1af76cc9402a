/**
 * The libvirt backend of the Hypervisor interface. Every outside call goes through virsh,
 * qemu-img or genisoimage (via the injected Exec), so failures arrive as CommandErrors.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type {
  BuildCheck,
  BuildRequest,
  GuestEventSink,
  GuestEventStream,
  GuestMeta,
  Hypervisor,
  Observation,
  RunnerRequest,
} from '../hypervisor.js';
import path from 'node:path';
import { parseName } from '../names.js';
import { formatBytes } from '../../util/size.js';
import { stagingDir } from '../../images/base-cache.js';
import { rebuildDomainXml } from './build-xml.js';
import { destroyGuest, filesInUse } from './destroy.js';
import { rootDiskOf } from './devices-xml.js';
import { parseDomainXml } from './domain-xml.js';
import { execaExec, type Exec } from '../../exec/exec.js';
import { VirshEventStream } from './events.js';
import { observeGuests } from './observe.js';
import { buildFiles, filesForName, imageLayout, runnerFiles, type ImageLayout } from './paths.js';
import { backingChain, createOverlay, virtualSize } from './qcow2.js';
import { runnerDomainXml } from './runner-xml.js';
import { exportTemplate, hasBase, importTemplate, type TemplateIoContext } from './template-io.js';
import { buildSeedIso } from './seed.js';
import { buildRunnerSeedIso } from './runner-seed.js';
import { createGuestAgent, type GuestAgent } from './guest-agent.js';
import { parseDomstate, verdictFor } from './status.js';
import { createVirsh, guestError, isNoDomain, type Virsh } from './virsh.js';
import { GuestExistsError } from '../../errors.js';

export interface LibvirtDeps {
  /** e.g. `qemu:///system`, or a sandbox's `qemu+unix:///system?socket=…`. */
  uri: string;
  prefix: string;
  imagesDir: string;
  log: Logger;
  /** Runs external commands; defaults to execa. Tests wrap it to count processes. */
  exec?: Exec;
  /** Domain type for generated XML: `qemu` (TCG, the default) or `kvm`. */
  domainType?: string;
}

export class LibvirtHypervisor implements Hypervisor {
  readonly kind = 'libvirt';
  private readonly exec: Exec;
  private readonly virsh: Virsh;
  private readonly layout: ImageLayout;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly domainType: string;
  private readonly uri: string;
  /** Domain UUID → corral metadata; see observe.ts for why this memo is safe. */
  private readonly metaMemo = new Map<string, GuestMeta>();
  /** Template name → its domain XML: templates are never redefined, so one dumpxml per template serves every clone. */
  private readonly templateXml = new Map<string, string>();
  private readonly agent: GuestAgent;

  constructor(deps: LibvirtDeps) {
    this.exec = deps.exec ?? execaExec;
    this.virsh = createVirsh(deps.uri, this.exec);
    this.layout = imageLayout(deps.imagesDir);
    this.prefix = deps.prefix;
    this.log = deps.log.child({ hypervisor: 'libvirt' });
    this.domainType = deps.domainType ?? 'qemu';
    this.uri = deps.uri;
    this.agent = createGuestAgent(this.virsh);
  }

  watchEvents(sink: GuestEventSink): GuestEventStream {
    return new VirshEventStream({ uri: this.uri, log: this.log }, sink);
  }

  canRunScripts(name: string): Promise<boolean> {
    return this.agent.ping(name);
  }

  runScript(name: string, script: string, onOutput: (chunk: Buffer) => void): Promise<number> {
    return this.agent.runScript(name, script, { onOutput });
  }

  observe(): Promise<Observation> {
    return observeGuests({ virsh: this.virsh, prefix: this.prefix, layout: this.layout, metaMemo: this.metaMemo });
  }

  async startBuild(req: BuildRequest): Promise<void> {
    const parsed = parseName(this.prefix, req.name);
    if (parsed?.role !== 'rebuild') throw new Error(`${req.name} is not a rebuild guest name`);
    // Its files are named by profile@gen: writing them for a guest that exists would wreck it.
    if (await this.exists(req.name)) throw new GuestExistsError(req.name);
    const log = this.log.child({ guest: req.name, profile: req.profile.name });
    const l = this.layout;
    await Promise.all([l.templatesDir, l.seedsDir, l.statusDir, l.logsDir].map((d) => mkdir(d, { recursive: true })));
    const files = buildFiles(l, parsed.profile, parsed.gen);
    const base = req.baseImage;
    const size = req.profile.guest.diskBytes;
    if (size !== undefined) {
      const baseSize = await virtualSize(this.exec, base);
      if (size < baseSize)
        throw new Error(
          `guest.disk ${formatBytes(size)} is smaller than the base image (${formatBytes(baseSize)}): a disk can grow, not shrink`,
        );
    }
    try {
      await createOverlay(this.exec, base, files.disk, size);
      await buildSeedIso(this.exec, req.profile.provision, files.seed);
      // A stale verdict from an earlier attempt must never be read as this build's.
      await writeFile(files.status, '');
      const boot = await this.copyBootFiles(req, files.disk);
      const input = {
        name: req.name,
        profile: req.profile,
        meta: req.meta,
        ...files,
        ...boot,
        domainType: this.domainType,
      };
      await this.virsh.define(await rebuildDomainXml(input)).catch((err: unknown) => {
        throw guestError(req.name, err);
      });
    } catch (err) {
      // Nothing refers to these files until the guest is defined, so no later pass would remove them.
      const stem = files.disk.replace(/\.qcow2$/, '');
      await Promise.all(
        [...Object.values(files), `${stem}.kernel`, `${stem}.initrd`].map((f) => rm(f, { force: true })),
      );
      throw err;
    }
    // From here on a failure leaves a defined rebuild guest without verdict: the next pass discards it.
    await this.virsh.run(['start', req.name]).catch((err: unknown) => {
      throw guestError(req.name, err);
    });
    log.info({ disk: files.disk, base }, 'rebuild guest started');
  }

  private async exists(name: string): Promise<boolean> {
    try {
      await this.virsh.run(['domstate', name]);
      return true;
    } catch (err) {
      if (isNoDomain(err)) return false;
      throw err;
    }
  }

  /** Kernel and initrd copied beside the template disk: a promoted template must not change when the profile dir does. */
  private async copyBootFiles(req: BuildRequest, disk: string): Promise<{ kernel?: string; initrd?: string }> {
    const g = req.profile.guest;
    if (g.xml || !g.kernel) return {};
    const stem = disk.replace(/\.qcow2$/, '');
    const kernel = `${stem}.kernel`;
    await copyFile(g.kernel, kernel);
    if (!g.initrd) return { kernel };
    const initrd = `${stem}.initrd`;
    await copyFile(g.initrd, initrd);
    return { kernel, initrd };
  }

  async checkBuild(name: string): Promise<BuildCheck> {
    let out: string;
    try {
      out = await this.virsh.run(['domstate', '--reason', name]);
    } catch (err) {
      if (isNoDomain(err)) return { done: true, verdict: { ok: false, reason: 'guest vanished' } };
      throw err;
    }
    const status = filesForName(this.layout, this.prefix, name)?.status;
    if (!status) throw new Error(`${name} is not a corral guest name`);
    const verdict = await verdictFor(parseDomstate(out), status);
    return verdict ? { done: true, verdict } : { done: false };
  }

  async promote(rebuild: string, template: string): Promise<void> {
    const from = parseName(this.prefix, rebuild);
    const to = parseName(this.prefix, template);
    if (from?.role !== 'rebuild' || to?.role !== 'template' || from.profile !== to.profile || from.gen !== to.gen) {
      throw new Error(`cannot promote ${rebuild} to ${template}: not a rebuild and its own template name`);
    }
    await this.virsh.run(['domrename', rebuild, template]).catch((err: unknown) => {
      throw guestError(isNoDomain(err) ? rebuild : template, err);
    });
    this.log.info({ guest: template, from: rebuild }, 'promoted');
  }

  async createRunner(req: RunnerRequest): Promise<void> {
    const files = runnerFiles(this.layout, req.name);
    const t = parseName(this.prefix, req.template);
    if (t?.role !== 'template') throw new Error(`${req.template} is not a template guest name`);
    await Promise.all([this.layout.runnersDir, this.layout.statusDir].map((d) => mkdir(d, { recursive: true })));
    // The overlay is made under a temp name and only renamed once define has succeeded, so a
    // clash with an existing guest of this name never touches that guest's disk.
    const tmpDisk = `${files.disk}.tmp-${randomBytes(4).toString('hex')}`;
    // The runner's seed, like its disk, is built under a temp name and moved in after define.
    const seed = req.seedFiles ? path.join(this.layout.seedsDir, `${req.name}.iso`) : undefined;
    const tmpSeed = `${seed}.tmp-${randomBytes(4).toString('hex')}`;
    try {
      if (seed && req.seedFiles) {
        await mkdir(this.layout.seedsDir, { recursive: true });
        await buildRunnerSeedIso(this.exec, req.name, req.seedFiles, tmpSeed);
      }
      const templateXml = await this.templateDomainXml(req.template);
      const templateDisk = rootDiskOf(parseDomainXml(templateXml));
      if (!templateDisk) throw new Error(`template ${req.template} has no corral root disk`);
      // libvirt does not open disks at define time, so the overlay and the define run side by side.
      const [overlay, defined] = await Promise.allSettled([
        createOverlay(this.exec, templateDisk, tmpDisk),
        this.virsh.define(
          runnerDomainXml(templateXml, { name: req.name, meta: req.meta, ...files, ...(seed ? { seed } : {}) }),
        ),
      ]);
      if (overlay.status === 'rejected') {
        if (defined.status === 'fulfilled') await this.virsh.run(['undefine', req.name]).catch(() => undefined);
        throw overlay.reason;
      }
      if (defined.status === 'rejected') throw guestError(req.name, defined.reason);
      await rename(tmpDisk, files.disk);
      if (seed) await rename(tmpSeed, seed);
    } finally {
      await rm(tmpDisk, { force: true });
      await rm(tmpSeed, { force: true });
    }
    await writeFile(files.status, '');
    await this.virsh.run(['start', req.name]).catch((err: unknown) => {
      throw guestError(req.name, err);
    });
    this.log.debug({ guest: req.name, template: req.template }, 'runner started');
  }

  private async templateDomainXml(template: string): Promise<string> {
    const known = this.templateXml.get(template);
    if (known) return known;
    const xml = await this.virsh.run(['dumpxml', '--inactive', template]).catch((err: unknown) => {
      throw guestError(template, err);
    });
    this.templateXml.set(template, xml);
    return xml;
  }

  destroy(name: string): Promise<void> {
    this.templateXml.delete(name);
    return destroyGuest({ virsh: this.virsh, prefix: this.prefix, layout: this.layout, log: this.log }, name);
  }

  async setAside(rebuild: string, failed: string): Promise<void> {
    const from = parseName(this.prefix, rebuild);
    const to = parseName(this.prefix, failed);
    if (from?.role !== 'rebuild' || to?.role !== 'failed' || from.profile !== to.profile || from.gen !== to.gen) {
      throw new Error(`cannot set ${rebuild} aside as ${failed}: not a rebuild and its own failed name`);
    }
    // A timed-out build still runs; a renamed domain must be inactive.
    await this.virsh.run(['destroy', rebuild]).catch(() => undefined);
    await this.virsh.run(['domrename', rebuild, failed]);
    this.log.info({ guest: failed, from: rebuild }, 'failed build kept for debugging (--keep-failed)');
  }

  async diskChain(name: string): Promise<string[]> {
    let xml: string;
    try {
      xml = await this.virsh.run(['dumpxml', '--inactive', name]);
    } catch (err) {
      if (isNoDomain(err)) return [];
      throw err;
    }
    const disk = rootDiskOf(parseDomainXml(xml));
    return disk ? backingChain(disk) : [];
  }

  filesInUse(): Promise<Set<string>> {
    return filesInUse({ virsh: this.virsh });
  }

  get templates(): NonNullable<Hypervisor['templates']> {
    const io: TemplateIoContext = {
      virsh: this.virsh,
      exec: this.exec,
      prefix: this.prefix,
      layout: this.layout,
      domainType: this.domainType,
    };
    return {
      export: (name) => exportTemplate(io, name),
      hasBase: (version) => hasBase(io, version),
      stagingDir: (key) => stagingDir(this.layout.root, key),
      import: async (req) => {
        await importTemplate(io, req);
        this.log.info({ guest: req.name }, 'template imported');
      },
    };
  }

  async consoleLog(name: string): Promise<string | undefined> {
    const file = filesForName(this.layout, this.prefix, name)?.consoleLog;
    if (!file) return undefined;
    return readFile(file, 'utf8').catch(() => undefined);
  }
}

export function createLibvirtHypervisor(deps: LibvirtDeps): LibvirtHypervisor {
  return new LibvirtHypervisor(deps);
}
