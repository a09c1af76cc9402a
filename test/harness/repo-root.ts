/**
 * The repository root, found by walking up from this file: the harness also runs compiled (e.g.
 * from dist-bench/test/harness), where a fixed `../..` would point into the build dir.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function repoRoot(from: string = path.dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'scripts/libvirtd-sandbox.sh')) && existsSync(path.join(dir, 'package.json')))
      return dir;
    if (path.dirname(dir) === dir) throw new Error(`no corral checkout above ${from}`);
  }
}
