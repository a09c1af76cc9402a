/**
 * Templates leaving and entering this host (for `corral push`/`pull`). Export names a template's
 * files (its disk, the base that disk's qcow2 header points at, boot files) and its domain XML
 * stripped of everything host-specific: uuid, MAC addresses, file paths, corral's metadata.
 * Import is the reverse: files are moved into the images tree, the disk's backing file is
 * re-pointed at this host's copy of the base, and defining the domain — the last step — is what
 * makes the template exist, so an import that fails midway leaves no template behind.
 */
import { chmod, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import type { GuestMeta, TemplateExport, TemplateImport } from '../hypervisor.js';
import { parseName } from '../names.js';
import { adoptBase, cachedBasePath } from '../../images/base-cache.js';
import { child, children, isNode, parseDomainXml, buildDomainXml, text, type XmlNode } from './domain-xml.js';
import {
  currentOwner,
  diskSerial,
  ROOT_SERIAL,
  rootDiskOf,
  SEED_SERIAL,
  setLifecycle,
  setStatusAndConsole,
} from './devices-xml.js';
import type { Exec } from '../../exec/exec.js';
import { readMeta, setMeta } from './metadata.js';
import { buildFiles, type ImageLayout } from './paths.js';
import { IMAGE_MODE, readBackingFile } from './qcow2.js';
import type { Virsh } from './virsh.js';

export interface TemplateIoContext {
  virsh: Virsh;
  exec: Exec;
  prefix: string;
  layout: ImageLayout;
  domainType: string;
}

export async function exportTemplate(ctx: TemplateIoContext, name: string): Promise<TemplateExport> {
  if (parseName(ctx.prefix, name)?.role !== 'template') throw new Error(`${name} is not a template guest name`);
  const doc = parseDomainXml(await ctx.virsh.run(['dumpxml', '--inactive', name]));
  const meta = readMeta(doc);
  if (!meta.ok) throw new Error(`template ${name}: ${meta.reason}`);
  const disk = rootDiskOf(doc);
  if (!disk) throw new Error(`template ${name} has no corral root disk`);
  const files: TemplateExport['files'] = [];
  const base = await readBackingFile(disk);
  if (base) {
    if (await readBackingFile(base))
      throw new Error(`template ${name}: its base ${base} has a backing file itself; only one level is supported`);
    files.push({ name: 'base', path: base, format: 'qcow2' });
  }
  files.push({ name: 'disk', path: disk, format: 'qcow2', ...(base ? { backing: 'base' } : {}) });
  const os = doc.domain['os'];
  if (isNode(os)) {
    for (const k of ['kernel', 'initrd'] as const) {
      const p = text(os[k]);
      if (p) {
        files.push({ name: k, path: p });
        os[k] = k;
      }
    }
  }
  delete doc.domain['uuid'];
  delete doc.domain['metadata'];
  delete doc.domain['name'];
  delete doc.domain['@_id'];
  const dev = child(doc.domain, 'devices');
  dev['disk'] = children(dev, 'disk')
    .filter((d) => diskSerial(d) !== SEED_SERIAL)
    .map((d) => {
      if (diskSerial(d) !== ROOT_SERIAL) return d;
      const copy: XmlNode = { ...d, source: { '@_file': 'disk' } };
      delete copy['backingStore'];
      return copy;
    });
  for (const nic of children(dev, 'interface')) delete nic['mac'];
  delete dev['serial'];
  delete dev['console'];
  dev['channel'] = children(dev, 'channel').filter((c) => !isNode(c['source']));
  if ((dev['channel'] as XmlNode[]).length === 0) delete dev['channel'];
  // Anything else that still names a file on this host is not portable.
  const leftover = JSON.stringify(doc).match(/"@_(?:file|path)":"\/[^"]*"/);
  if (leftover)
    throw new Error(`template ${name}: its domain XML names a host file (${leftover[0]}) corral cannot carry`);
  return { meta: meta.meta, domainXml: buildDomainXml(doc), files };
}

export async function hasBase(ctx: TemplateIoContext, baseVersion: string): Promise<boolean> {
  return stat(cachedBasePath(ctx.layout.root, baseVersion)).then(
    () => true,
    () => false,
  );
}

export async function importTemplate(ctx: TemplateIoContext, req: TemplateImport): Promise<void> {
  const parsed = parseName(ctx.prefix, req.name);
  if (parsed?.role !== 'template') throw new Error(`${req.name} is not a template guest name`);
  const l = ctx.layout;
  await Promise.all([l.templatesDir, l.statusDir, l.logsDir].map((d) => mkdir(d, { recursive: true })));
  const target = buildFiles(l, parsed.profile, parsed.gen);
  const stem = target.disk.replace(/\.qcow2$/, '');
  const stagedDisk = req.files['disk'];
  if (!stagedDisk) throw new Error(`template ${req.name}: the image has no disk`);
  if (await exists(target.disk)) throw new Error(`cannot import ${req.name}: ${target.disk} exists`);

  // The base is content-addressed: land it (or find it) first; nothing refers to it yet.
  let base: string | undefined;
  if (req.backing) {
    base = cachedBasePath(l.root, req.meta.baseVersion);
    const stagedBase = req.files['base'];
    if (stagedBase && !(await exists(base)))
      await adoptBase(l.root, req.meta.baseVersion, stagedBase, {
        reference: req.baseOrigin?.reference ?? '(unknown)',
        template: req.name,
        cachedAt: req.baseOrigin?.cachedAt ?? new Date().toISOString(),
        ...(req.baseOrigin?.digest ? { digest: req.baseOrigin.digest } : {}),
      });
    if (!(await exists(base)))
      throw new Error(`template ${req.name}: base ${base} is missing and the image did not carry it`);
    await ctx.exec('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', base, stagedDisk]);
  }
  const landed: string[] = [];
  try {
    const boot: Record<string, string> = {};
    for (const k of ['kernel', 'initrd'] as const) {
      const staged = req.files[k];
      if (!staged) continue;
      boot[k] = `${stem}.${k}`;
      await rename(staged, boot[k]);
      landed.push(boot[k]);
    }
    await rename(stagedDisk, target.disk);
    landed.push(target.disk);
    // As for every image corral makes (qcow2.ts, IMAGE_MODE): qemu as another user must read the chain.
    await Promise.all([target.disk, ...(base ? [base] : [])].map((f) => chmod(f, IMAGE_MODE).catch(() => undefined)));
    await writeFile(target.status, '');
    await ctx.virsh.define(templateXml(req, { ...target, ...boot, domainType: ctx.domainType }));
  } catch (err) {
    await Promise.all(landed.map((f) => rm(f, { force: true })));
    throw err;
  }
}

function templateXml(
  req: TemplateImport,
  files: {
    disk: string;
    statusSocket: string;
    consoleSocket: string;
    kernel?: string;
    initrd?: string;
    domainType: string;
  },
): string {
  const doc = parseDomainXml(req.domainXml);
  doc.domain['@_type'] = files.domainType;
  doc.domain['name'] = req.name;
  const meta: GuestMeta = { ...req.meta };
  delete meta.owner;
  setMeta(doc, meta);
  setLifecycle(doc);
  const os = child(doc.domain, 'os');
  for (const k of ['kernel', 'initrd'] as const) {
    if (os[k] === undefined) continue;
    if (!files[k]) throw new Error(`template ${req.name}: its domain boots a ${k} the image did not carry`);
    os[k] = files[k];
  }
  const dev = child(doc.domain, 'devices');
  const root = children(dev, 'disk').find((d) => diskSerial(d) === ROOT_SERIAL);
  if (!root) throw new Error(`template ${req.name}: its domain XML has no disk tagged ${ROOT_SERIAL}`);
  root['source'] = { '@_file': files.disk };
  // Templates never run; their runners get their own sockets (runner-xml.ts). Labelled for this process.
  setStatusAndConsole(doc, files, currentOwner());
  return buildDomainXml(doc);
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}
