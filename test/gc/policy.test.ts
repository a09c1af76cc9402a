/** What is garbage under imagesDir: a file in some guest's backing chain never is, whatever its name. */
import { describe, expect, it } from 'vitest';
import { garbage, type GcFacts } from '../../src/gc/policy.js';

const root = '/images';
const hexA = 'a'.repeat(64);
const hexB = 'b'.repeat(64);
const NOW = 1_000_000_000;
const file = (rel: string, ageMs = 3_600_000) => ({ path: `${root}/${rel}`, bytes: 10, mtimeMs: NOW - ageMs });

function facts(overrides: Partial<GcFacts>): GcFacts {
  return {
    imagesDir: root,
    files: [],
    inUse: new Set(),
    keepBases: new Set(),
    protectedKeys: [],
    now: NOW,
    graceMs: 0,
    ...overrides,
  };
}
const paths = (f: GcFacts) => garbage(f).map((r) => r.path.slice(root.length + 1));

describe('gc policy', () => {
  it("spares what a running pull landed before it defines the template on it (another process's pull too)", () => {
    const pullStarted = NOW - 5_000;
    // Renamed into place: an old mtime from the registry's chunks, a ctime from the rename.
    const landed = (rel: string, ctimeMs: number) => ({ ...file(rel), ctimeMs });
    const files = [
      landed('templates/f@new.kernel', NOW - 1_000),
      landed('templates/f@new.qcow2', NOW - 1_000),
      landed('templates/f@old.kernel', pullStarted - 60_000),
    ];
    expect(paths(facts({ files, pullsRunningSinceMs: pullStarted }))).toEqual(['templates/f@old.kernel']);
    expect(paths(facts({ files }))).toHaveLength(3);
  });

  it('never removes a file in use, even a retired template disk or an unwanted base', () => {
    const files = [
      file('templates/web@old.qcow2'),
      file(`base/sha256/${hexA}.qcow2`),
      file(`base/sha256/${hexA}.json`),
    ];
    const inUse = new Set([`${root}/templates/web@old.qcow2`, `${root}/base/sha256/${hexA}.qcow2`]);
    expect(paths(facts({ files, inUse }))).toEqual([]);
    expect(paths(facts({ files }))).toEqual([
      'templates/web@old.qcow2',
      `base/sha256/${hexA}.qcow2`,
      `base/sha256/${hexA}.json`,
    ]);
  });

  it('keeps wanted base versions and their partial downloads; removes the rest and interrupted temp files', () => {
    const files = [
      file(`base/sha256/${hexA}.qcow2`),
      file(`base/sha256/${hexB}.qcow2`),
      file(`base/downloads/${hexA}.part`),
      file(`base/downloads/${hexB}.part`),
      file(`base/sha256/${hexB}.qcow2.tmp-1234abcd`),
    ];
    const removed = garbage(facts({ files, keepBases: new Set([hexA]) }));
    expect(removed.map((r) => [r.path.slice(root.length + 1), r.reason])).toEqual([
      [`base/sha256/${hexB}.qcow2`, 'base version no template, runner or build uses'],
      [`base/downloads/${hexB}.part`, 'partial download of a base version no profile wants'],
      [`base/sha256/${hexB}.qcow2.tmp-1234abcd`, 'temp file of an interrupted base conversion'],
    ]);
  });

  it('leaves the files of in-flight builds and, with a grace, anything fresh', () => {
    const files = [
      file('templates/web@new.qcow2'),
      file('seeds/web@new.iso'),
      file('runners/ci-runner-web.1.qcow2', 1000),
    ];
    expect(paths(facts({ files, protectedKeys: ['web@new'], graceMs: 60_000 }))).toEqual([]);
    expect(paths(facts({ files }))).toHaveLength(3);
  });

  it('never reaches outside imagesDir', () => {
    expect(paths(facts({ files: [{ path: '/etc/passwd', bytes: 1, mtimeMs: 0 }] }))).toEqual([]);
  });
});
