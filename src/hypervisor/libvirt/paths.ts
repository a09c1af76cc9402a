/**
 * Where a guest's files live under imagesDir (docs/design.md, "Files"). Build artefacts are keyed by
 * `<profile>@<gen>`, not by guest name, so promotion (a rename) moves no file.
 */
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
  };
}

export interface GuestFiles {
  disk: string;
  seed?: string;
  status: string;
  consoleLog: string;
}

export function buildFiles(layout: ImageLayout, profile: string, gen: string): Required<GuestFiles> {
  const key = `${profile}@${gen}`;
  return {
    disk: path.join(layout.templatesDir, `${key}.qcow2`),
    seed: path.join(layout.seedsDir, `${key}.iso`),
    status: path.join(layout.statusDir, `${key}.status`),
    consoleLog: path.join(layout.logsDir, `${key}.console.log`),
  };
}

export function runnerFiles(layout: ImageLayout, runnerName: string): GuestFiles {
  return {
    disk: path.join(layout.runnersDir, `${runnerName}.qcow2`),
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
