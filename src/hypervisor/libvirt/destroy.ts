/**
 * Removing a guest and the files it owns. Files are only ever deleted inside imagesDir, never in
 * the base cache, and never while another defined guest still uses them (a template disk that
 * backs a runner's overlay, a kernel copy a runner boots from).
 */
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { hasPrefix } from '../names.js';
import { children, isNode, parseDomainXml, sourcePath, text, type DomainDoc } from './domain-xml.js';
import { statusFileOf } from './devices-xml.js';
import { listNames } from './observe.js';
import { filesForName, isInside, type ImageLayout } from './paths.js';
import { backingChain } from './qcow2.js';
import { parseDomstate } from './status.js';
import { isNoDomain, virshQuote, type Virsh } from './virsh.js';

export interface DestroyContext {
  virsh: Virsh;
  prefix: string;
  layout: ImageLayout;
  log: Logger;
}

/** Every file a domain's XML points at: disks, channel/console files, kernel and initrd. */
export function filesOfDomain(doc: DomainDoc): string[] {
  const files: string[] = [];
  const dev = doc.domain['devices'];
  if (isNode(dev)) {
    for (const key of ['disk', 'serial', 'console']) {
      for (const d of children(dev, key)) {
        const p = sourcePath(d);
        if (p) files.push(p);
      }
    }
  }
  const status = statusFileOf(doc);
  if (status) files.push(status);
  const os = doc.domain['os'];
  if (isNode(os)) {
    for (const key of ['kernel', 'initrd']) {
      const p = text(os[key]);
      if (p) files.push(p);
    }
  }
  return files;
}

async function ignoreMissing(p: Promise<unknown>, alsoIgnore?: RegExp): Promise<void> {
  try {
    await p;
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr;
    if (isNoDomain(err) || (alsoIgnore && typeof stderr === 'string' && alsoIgnore.test(stderr))) return;
    throw err;
  }
}

export async function destroyGuest(ctx: DestroyContext, name: string): Promise<void> {
  if (!hasPrefix(ctx.prefix, name))
    throw new Error(`refusing to destroy ${name}: it does not carry the prefix ${ctx.prefix}-`);
  const q = virshQuote(name);
  const {
    out: [xml = '', stateText = ''],
  } = await ctx.virsh.batch([`dumpxml --inactive ${q}`, `domstate --reason ${q}`]);
  const candidates = new Set<string>();
  if (xml !== '') {
    const doc = parseDomainXml(xml);
    for (const f of filesOfDomain(doc)) candidates.add(f);
    if (parseDomstate(stateText).state !== 'shutoff') {
      await ignoreMissing(ctx.virsh.run(['destroy', name]), /not running/i);
    }
    const os = doc.domain['os'];
    const nvram = isNode(os) && os['nvram'] !== undefined;
    await ignoreMissing(ctx.virsh.run(['undefine', name, ...(nvram ? ['--nvram'] : [])]));
  }
  const byName = filesForName(ctx.layout, ctx.prefix, name);
  if (byName) for (const f of Object.values(byName)) if (f) candidates.add(f);
  // Boot files copied beside a build's disk (see LibvirtHypervisor.copyBootFiles).
  if (byName?.seed) for (const ext of ['kernel', 'initrd']) candidates.add(byName.disk.replace(/qcow2$/, ext));

  const owned = [...candidates].filter((f) => isInside(ctx.layout.root, f) && !isInside(ctx.layout.baseDir, f));
  const inUse = owned.some((f) => isInside(ctx.layout.templatesDir, f)) ? await filesInUse(ctx) : new Set<string>();
  for (const f of owned) {
    if (inUse.has(f)) {
      ctx.log.warn({ guest: name, file: f }, 'keeping a file another guest still uses');
      continue;
    }
    await unlink(f).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}

/**
 * Files that the remaining defined guests (ours or not) use, following disk backing chains, and
 * the files corral keeps by name for each of its guests.
 */
export async function filesInUse(
  ctx: Pick<DestroyContext, 'virsh' | 'layout' | 'log' | 'prefix'>,
): Promise<Set<string>> {
  const names = (await listNames(ctx.virsh)).filter((n) => !/['\\\n]/.test(n));
  const { out: xmls } = await ctx.virsh.batch(names.map((n) => `dumpxml --inactive ${virshQuote(n)}`));
  const used = new Set<string>();
  // What corral keeps for a guest outside its domain XML (the status record and console log it
  // copies the guest's sockets into, its seed): in use as long as the guest is defined.
  for (const name of names) {
    const files = filesForName(ctx.layout, ctx.prefix, name);
    if (files) for (const f of Object.values(files)) if (f) used.add(path.resolve(f));
  }
  for (const xml of xmls) {
    if (xml === '') continue;
    let doc: DomainDoc;
    try {
      doc = parseDomainXml(xml);
    } catch {
      continue;
    }
    for (const f of filesOfDomain(doc)) {
      used.add(path.resolve(f));
      // Inside imagesDir only corral's qcow2 images have backing files (seeds are raw ISOs, 0600,
      // and given to qemu while in use; sockets and records are no disks).
      const images = [ctx.layout.templatesDir, ctx.layout.runnersDir, ctx.layout.baseDir];
      if (isInside(ctx.layout.root, f) && !images.some((d) => isInside(d, f))) continue;
      try {
        for (const link of await backingChain(f)) used.add(link);
      } catch (err) {
        // Inside imagesDir an unreadable chain stops the destroy (it may hide a disk in use);
        // another guest's disk elsewhere that corral may not read cannot be built on ours.
        if (isInside(ctx.layout.root, f)) throw err;
        ctx.log.warn(
          { file: f, error: (err as Error).message },
          'cannot read the backing chain of a disk outside imagesDir',
        );
      }
    }
  }
  return used;
}
