/**
 * The libvirt backend of the Hypervisor interface. Every outside call goes through virsh,
 * qemu-img or genisoimage (via the injected Exec), so failures arrive as CommandErrors.
 */
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
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
  ScriptOptions,
} from '../hypervisor.js';
import { parseName } from '../names.js';
import { formatBytes } from '../../util/size.js';
import { stagingDir } from '../../images/base-cache.js';
import { rebuildDomainXml } from './build-xml.js';
import { destroyGuest, filesInUse } from './destroy.js';
import { ChannelPump, hostErrorFor } from './channels.js';
import { currentOwner, rootDiskOf, type SocketOwner } from './devices-xml.js';
import { parseDomainXml } from './domain-xml.js';
import { execaExec, type Exec } from '../../exec/exec.js';
import { VirshEventStream } from './events.js';
import { observeGuests } from './observe.js';
import { buildFiles, filesForName, imageLayout, runnerFiles, type ImageLayout } from './paths.js';
import { backingChain, createOverlay, IMAGE_MODE, virtualSize } from './qcow2.js';
import { runnerDomainXml } from './runner-xml.js';
import { exportTemplate, hasBase, importTemplate, type TemplateIoContext } from './template-io.js';
import { buildRunnerSeed, buildSeedIso } from './seed.js';
import { createGuestAgent, type GuestAgent } from './guest-agent.js';
import { parseDomstate, verdictFor } from './status.js';
import { createVirsh, guestError, isNoDomain, startGuest, type Virsh } from './virsh.js';
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
  /**
   * Connect to guests' status and console sockets and write down what they say (channels.ts).
   * Only the state-dir lock holder does (a socket serves one client); read-only commands read
   * what it wrote. Default true.
   */
  attachChannels?: boolean;
  /** This host's name, written on every runner's seed (default os.hostname()). */
  hostName?: string;
}

export class LibvirtHypervisor implements Hypervisor {
  readonly kind = 'libvirt';
  private readonly exec: Exec;
  private readonly virsh: Virsh;
  private readonly layout: ImageLayout;
  private readonly prefix: string;
  private readonly log: Logger;
  private readonly domainType: string;
  private readonly pump: ChannelPump | undefined;
  private readonly owner: SocketOwner = currentOwner();
  private readonly hostName: string;
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
    this.pump = deps.attachChannels === false ? undefined : new ChannelPump(this.log);
    this.hostName = deps.hostName ?? os.hostname();
    this.uri = deps.uri;
    this.agent = createGuestAgent(this.virsh);
  }

  watchEvents(sink: GuestEventSink): GuestEventStream {
    return new VirshEventStream({ uri: this.uri, log: this.log }, sink);
  }

  canRunScripts(name: string): Promise<boolean> {
    return this.agent.ping(name);
  }

  runScript(
    name: string,
    script: string,
    onOutput: (chunk: Buffer) => void,
    opts: ScriptOptions = {},
  ): Promise<number> {
    return this.agent.runScript(name, script, { onOutput, ...opts });
  }

  async observe(): Promise<Observation> {
    const ctx = { virsh: this.virsh, prefix: this.prefix, layout: this.layout, metaMemo: this.metaMemo };
    const first = await observeGuests(ctx);
    const pump = this.pump;
    if (!pump) return first;
    const unattached = first.guests.filter(
      (g) => g.state === 'running' && g.role !== 'template' && !pump.attached(g.name),
    );
    if (unattached.length === 0) return first;
    await Promise.all(unattached.map((g) => this.attach(g.name)));
    // What a guest had queued arrives at once on connecting (its write blocked until we came).
    await new Promise((r) => setTimeout(r, 100));
    return observeGuests(ctx);
  }

  /** Stops reading guests' channels (only one reader at a time: the state-dir lock holder). */
  async releaseChannels(): Promise<void> {
    await this.pump?.detachAll();
  }

  private async attach(name: string): Promise<void> {
    const files = filesForName(this.layout, this.prefix, name);
    if (!files || !this.pump) return;
    await this.pump.attach(name, files);
  }

  /**
   * Creates the dirs corral keeps guest files in, with the modes a stock host needs whatever the
   * umask (the systemd units use 0027): qemu runs as another user and opens disks and seeds itself,
   * so the dirs on their paths are 0711 (enter, not list; the files themselves are relabelled for
   * qemu by libvirt). What corral alone reads (sockets, status records, console logs) is 0700.
   */
  private async ensureDirs(): Promise<void> {
    const l = this.layout;
    const traversable = [
      l.root,
      l.baseDir,
      path.join(l.baseDir, 'sha256'),
      l.templatesDir,
      l.runnersDir,
      l.seedsDir,
      l.runnerSeedsDir,
    ];
    for (const d of traversable) await this.dirWithMode(d, 0o711);
    for (const d of [l.socketsDir, l.statusDir, l.logsDir]) await this.dirWithMode(d, 0o700);
  }

  private async dirWithMode(dir: string, mode: number): Promise<void> {
    await mkdir(dir, { recursive: true });
    try {
      await chmod(dir, mode);
    } catch (err) {
      throw hostErrorFor(err as NodeJS.ErrnoException, dir, `set mode ${mode.toString(8)} on`);
    }
  }

  async startBuild(req: BuildRequest): Promise<void> {
    const parsed = parseName(this.prefix, req.name);
    if (parsed?.role !== 'rebuild') throw new Error(`${req.name} is not a rebuild guest name`);
    // Its files are named by profile@gen: writing them for a guest that exists would wreck it.
    if (await this.exists(req.name)) throw new GuestExistsError(req.name);
    const log = this.log.child({ guest: req.name, profile: req.profile.name });
    const l = this.layout;
    await this.ensureDirs();
    const files = buildFiles(l, parsed.profile, parsed.gen);
    const base = req.baseImage;
    await chmod(base, IMAGE_MODE).catch(() => undefined); // see IMAGE_MODE; not ours to change if shared
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
      // A stale verdict or console from an earlier attempt must never be read as this build's.
      await Promise.all([files.status, files.consoleLog].map((f) => rm(f, { force: true })));
      const boot = await this.copyBootFiles(req, files.disk);
      const input = {
        name: req.name,
        profile: req.profile,
        meta: req.meta,
        ...files,
        ...boot,
        domainType: this.domainType,
        owner: this.owner,
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
    await this.startAndAttach(req.name);
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
    await chmod(kernel, IMAGE_MODE);
    if (!g.initrd) return { kernel };
    const initrd = `${stem}.initrd`;
    await copyFile(g.initrd, initrd);
    await chmod(initrd, IMAGE_MODE);
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
    const files = filesForName(this.layout, this.prefix, name);
    if (!files) throw new Error(`${name} is not a corral guest name`);
    const state = parseDomstate(out);
    if (state.state === 'running') await this.attach(name);
    // A stopped guest's last words may still be on their way from its socket.
    else await this.pump?.settle(name);
    const verdict = await verdictFor(state, files.status);
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
    await this.ensureDirs();
    // The overlay and the seed are made under temp names and only renamed once define has
    // succeeded, so a clash with an existing guest of this name never touches that guest's files.
    const suffix = `.tmp-${randomBytes(4).toString('hex')}`;
    const tmpDisk = `${files.disk}${suffix}`;
    const tmpSeed = `${files.seed}${suffix}`;
    try {
      const templateXml = await this.templateDomainXml(req.template);
      const templateDisk = rootDiskOf(parseDomainXml(templateXml));
      if (!templateDisk) throw new Error(`template ${req.template} has no corral root disk`);
      // One seed per runner (seed.ts): its identity, plus a CI system's registration files under corral/.
      const identity = {
        name: req.name,
        profile: req.profile.name,
        labels: req.profile.labels,
        host: this.hostName,
        ...(req.seedFiles ? { extra: req.seedFiles } : {}),
      };
      const xml = runnerDomainXml(templateXml, { name: req.name, meta: req.meta, ...files, owner: this.owner });
      // libvirt does not open disks at define time, so the overlay, the seed and the define run side by side.
      const [overlay, seed, defined] = await Promise.allSettled([
        createOverlay(this.exec, templateDisk, tmpDisk),
        buildRunnerSeed(this.exec, identity, tmpSeed),
        this.virsh.define(xml),
      ]);
      const failed = [overlay, seed].find((r) => r.status === 'rejected');
      if (failed) {
        if (defined.status === 'fulfilled') await this.virsh.run(['undefine', req.name]).catch(() => undefined);
        throw failed.reason;
      }
      if (defined.status === 'rejected') throw guestError(req.name, defined.reason);
      await rename(tmpSeed, files.seed);
      await rename(tmpDisk, files.disk);
    } finally {
      await rm(tmpDisk, { force: true });
      await rm(tmpSeed, { force: true });
    }
    await Promise.all([files.status, files.consoleLog].map((f) => rm(f, { force: true })));
    await this.startAndAttach(req.name);
    this.log.debug({ guest: req.name, template: req.template }, 'runner started');
  }

  /**
   * Starts a defined guest and connects to its channels. A guest libvirt cannot start is the
   * host's problem: it is undefined with its files and the error (a HostError) goes up.
   */
  private async startAndAttach(name: string): Promise<void> {
    try {
      await startGuest(this.virsh, name);
    } catch (err) {
      await this.destroy(name).catch(() => undefined);
      throw err;
    }
    await this.attach(name);
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

  async destroy(name: string): Promise<void> {
    this.templateXml.delete(name);
    await this.pump?.detach(name);
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
    return filesInUse({ virsh: this.virsh, layout: this.layout, log: this.log, prefix: this.prefix });
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
        await this.ensureDirs();
        await importTemplate(io, req);
        this.log.info({ guest: req.name }, 'template imported');
      },
    };
  }

  /** What corral wrote down of the guest's serial console; a record it may not read is a HostError. */
  async consoleLog(name: string): Promise<string | undefined> {
    const file = filesForName(this.layout, this.prefix, name)?.consoleLog;
    if (!file) return undefined;
    await this.pump?.flush(name);
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') return undefined;
      throw hostErrorFor(e, file, 'read the console log');
    }
  }
}

export function createLibvirtHypervisor(deps: LibvirtDeps): LibvirtHypervisor {
  return new LibvirtHypervisor(deps);
}
