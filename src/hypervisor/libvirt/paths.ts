/**
 * Where a guest's files live under imagesDir (docs/design.md, "Files"). Build artefacts are keyed by
 * `<profile>@<gen>`, not by guest name, so promotion (a rename) moves no file.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { parseName } from '../names.js';

export interface ImageLayout {
  root: string;
  baseDir: string;
  templatesDir: string;
  runnersDir: string;
  seedsDir: string;
  statusDir: string;
  logsDir: string;
  /** Guest channel sockets (status, console): mode 0700, only corral (and root) may enter. */
  socketsDir: string;
  /** Per-runner seed ISOs (never world-readable: they carry what a runner is told). */
  runnerSeedsDir: string;
}

export function imageLayout(imagesDir: string): ImageLayout {
  const root = path.resolve(imagesDir);
  return {
    root,
    baseDir: path.join(root, 'base'),
    templatesDir: path.join(root, 'templates'),
    runnersDir: path.join(root, 'runners'),
    seedsDir: path.join(root, 'seeds'),
    statusDir: path.join(root, 'status'),
    logsDir: path.join(root, 'logs'),
    socketsDir: path.join(root, 'sockets'),
    runnerSeedsDir: path.join(root, 'seeds', 'runners'),
  };
}

export interface GuestFiles {
  disk: string;
  seed?: string;
  /** What the guest said on org.corral.status, as corral wrote it down. */
  status: string;
  /** The serial console, as corral wrote it down. */
  consoleLog: string;
  statusSocket: string;
  consoleSocket: string;
}

/** Unix socket paths are capped at 107 bytes; a long one is named by a hash of its key instead. */
export function socketPath(layout: ImageLayout, key: string, kind: 'status' | 'console'): string {
  const plain = path.join(layout.socketsDir, `${key}.${kind}.sock`);
  if (Buffer.byteLength(plain) <= 107) return plain;
  const hashed = path.join(layout.socketsDir, `${createHash('sha256').update(key).digest('hex').slice(0, 24)}.${kind}`);
  if (Buffer.byteLength(hashed) > 107) throw new Error(`imagesDir ${layout.root} is too long for unix socket paths`);
  return hashed;
}

export function buildFiles(layout: ImageLayout, profile: string, gen: string): Required<GuestFiles> {
  const key = `${profile}@${gen}`;
  return {
    disk: path.join(layout.templatesDir, `${key}.qcow2`),
    seed: path.join(layout.seedsDir, `${key}.iso`),
    status: path.join(layout.statusDir, `${key}.status`),
    consoleLog: path.join(layout.logsDir, `${key}.console.log`),
    statusSocket: socketPath(layout, key, 'status'),
    consoleSocket: socketPath(layout, key, 'console'),
  };
}

export function runnerFiles(layout: ImageLayout, runnerName: string): Required<GuestFiles> {
  return {
    disk: path.join(layout.runnersDir, `${runnerName}.qcow2`),
    seed: path.join(layout.runnerSeedsDir, `${runnerName}.iso`),
    statusSocket: socketPath(layout, runnerName, 'status'),
    consoleSocket: socketPath(layout, runnerName, 'console'),
    status: path.join(layout.statusDir, `${runnerName}.status`),
    consoleLog: path.join(layout.logsDir, `${runnerName}.console.log`),
  };
}

/** The files a guest of this name would own, derived from the name alone. */
export function filesForName(layout: ImageLayout, prefix: string, name: string): GuestFiles | undefined {
  const parsed = parseName(prefix, name);
  if (!parsed) return undefined;
  return parsed.role === 'runner' ? runnerFiles(layout, name) : buildFiles(layout, parsed.profile, parsed.gen);
}

/** True when `file` is inside `dir` (after resolving), so corral never deletes outside its tree. */
export function isInside(dir: string, file: string): boolean {
  const rel = path.relative(dir, path.resolve(file));
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}
