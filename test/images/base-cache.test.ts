/** The content-addressed base cache with real qemu-img: raw is converted, qcow2 copied, changed bytes refused. */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, TransientError } from '../../src/errors.js';
import { execaExec } from '../../src/exec/exec.js';
import { ensureBaseImage } from '../../src/images/base-cache.js';
import type { BaseSpec, CompiledProfile } from '../../src/sources/view.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'corral-base-cache-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const digest = async (file: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

function profileFor(base: BaseSpec, baseVersion: string): CompiledProfile {
  return {
    name: 'p',
    source: 's',
    dir,
    file: path.join(dir, 'profile.yaml'),
    runners: 0,
    base,
    baseVersion,
    guest: { cpus: 1, memoryMiB: 64 },
    provision: { dir, entry: 'x', timeoutSeconds: 1 },
    rebuild: {},
    labels: {},
    inputs: [],
    inputsHash: 'sha256:0',
  };
}

async function format(file: string): Promise<string> {
  const { stdout } = await execaExec('qemu-img', ['info', '--output=json', file]);
  return (JSON.parse(stdout) as { format: string }).format;
}

describe('ensureBaseImage', () => {
  it('converts a raw base to qcow2 under its digest, then reuses it', async () => {
    const raw = path.join(dir, 'base.raw');
    await writeFile(raw, Buffer.alloc(1024 * 1024, 7));
    const hex = await digest(raw);
    const deps = { imagesDir: path.join(dir, 'images'), exec: execaExec };
    const cached = await ensureBaseImage(profileFor({ kind: 'file', file: 'base.raw' }, `sha256:${hex}`), deps);
    expect(cached).toBe(path.join(dir, 'images/base/sha256', `${hex}.qcow2`));
    expect(await format(cached)).toBe('qcow2');
    await rm(raw);
    expect(await ensureBaseImage(profileFor({ kind: 'file', file: 'base.raw' }, `sha256:${hex}`), deps)).toBe(cached);
  });

  it('copies a qcow2 base byte for byte', async () => {
    const q = path.join(dir, 'base.qcow2');
    await execaExec('qemu-img', ['create', '-q', '-f', 'qcow2', q, '4M']);
    const hex = await digest(q);
    const cached = await ensureBaseImage(profileFor({ kind: 'file', file: q }, `sha256:${hex}`), {
      imagesDir: path.join(dir, 'images'),
      exec: execaExec,
    });
    expect(await digest(cached)).toBe(hex);
  });

  it('refuses a base whose bytes changed since compile, and other kinds of base', async () => {
    const f = path.join(dir, 'changed.raw');
    await writeFile(f, 'new bytes');
    const deps = { imagesDir: path.join(dir, 'images'), exec: execaExec };
    await expect(
      ensureBaseImage(profileFor({ kind: 'file', file: f }, `sha256:${'0'.repeat(64)}`), deps),
    ).rejects.toBeInstanceOf(TransientError);
    await expect(
      ensureBaseImage(profileFor({ kind: 'oci', ref: 'x' }, `sha256:${'0'.repeat(64)}`), deps),
    ).rejects.toBeInstanceOf(ConfigError);
  });
});
