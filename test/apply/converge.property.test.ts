import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildsDone } from '../../src/apply/apply.js';
import type { MemoryHypervisor, BuildOutcome } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { parseName } from '../../src/hypervisor/names.js';
import { runPass } from '../../src/reconcile/pass.js';
import type { CompiledProfile } from '../../src/sources/view.js';
import { HASH_A, HASH_B, aProfile } from '../builders/guests.js';
import { aView, memoryWorld } from '../builders/world.js';

let dir: string;
beforeAll(async () => (dir = await mkdtemp(join(tmpdir(), 'corral-prop-'))));
afterAll(async () => rm(dir, { recursive: true, force: true }));

const FOREIGN = 'build-server-do-not-touch';

/** Checks the reconcile invariants (docs/design.md, "Invariants") after every single hypervisor call. */
function checked(hv: MemoryHypervisor, desired: () => CompiledProfile[]) {
  const running = (profile: string) =>
    hv
      .guestNames()
      .filter(
        (n) =>
          n.startsWith(`ci-runner-${profile}.`) && hv.snapshot().guests.find((g) => g.name === n)?.state === 'running',
      ).length;
  const check = (before: Map<string, number>) => {
    const names = hv.guestNames();
    expect(names).toContain(FOREIGN);
    for (const name of names) {
      const parsed = parseName('ci', name);
      if (parsed?.role !== 'runner') continue;
      const gen = hv.snapshot().guests.find((g) => g.name === name)?.meta?.gen;
      expect(names, `runner ${name} lost its template`).toContain(`ci-template-${parsed.profile}@${gen}`);
    }
    for (const p of desired()) {
      const floor = Math.min(before.get(p.name) ?? 0, p.runners);
      expect(running(p.name), `ready runners of ${p.name} dropped`).toBeGreaterThanOrEqual(floor);
    }
  };
  for (const method of ['startBuild', 'promote', 'createRunner', 'destroy'] as const) {
    const original = hv[method].bind(hv) as (...args: unknown[]) => Promise<void>;
    (hv as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
      const before = new Map(desired().map((p) => [p.name, running(p.name)]));
      await original(...args);
      check(before);
    };
  }
  return hv;
}

const profileArb = fc.record({
  name: fc.constantFrom('alpha', 'beta', 'gamma'),
  runners: fc.integer({ min: 0, max: 4 }),
  hash: fc.constantFrom(HASH_A, HASH_B),
});
const stepArb = fc.record({
  profiles: fc.uniqueArray(profileArb, { selector: (p) => p.name, maxLength: 3 }),
  outcome: fc.constantFrom<BuildOutcome>('succeed', 'succeed', 'fail', 'crash', 'hang'),
  failures: fc.array(
    fc.constantFrom('createRunner', 'destroy', 'promote', 'startBuild') as fc.Arbitrary<
      'createRunner' | 'destroy' | 'promote' | 'startBuild'
    >,
    { maxLength: 2 },
  ),
  restart: fc.boolean(),
});

describe('reconcile on the memory backend (property)', () => {
  it('keeps the invariants after every call and converges once failures stop', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 4 }), async (steps) => {
        let clock = new Date('2026-11-24T00:00:00Z').getTime();
        const now = () => new Date(clock);
        let outcome: BuildOutcome = 'succeed';
        let desired: CompiledProfile[] = [];
        const stateDir = await mkdtemp(join(dir, 'run-'));
        const world = memoryWorld({
          stateDir,
          clock: now,
          sleep: async (ms) => void (clock += ms),
          hypervisor: { outcome: () => outcome, buildMs: 1000 },
          config: { backoff: { initialSeconds: 30, maxSeconds: 60 }, concurrency: { builds: 2, clones: 3 } },
        });
        const hv = checked(world.hypervisor, () => desired);
        hv.addForeignGuest(FOREIGN);
        let owner = 'process-1';
        // The real wiring of a pass (observe, facts, plan, apply), as reconcile --once and watch run it.
        const pass = async () => {
          const result = await runPass(
            aView(desired),
            { ...world.deps, pollMs: 500, ownerToken: owner },
            { inFlight: [] },
          );
          await buildsDone(result.builds);
          clock += 61_000; // past any back-off
          return result.plan.actions.length;
        };
        for (const step of steps) {
          desired = step.profiles.map((p) => aProfile(p.name).runners(p.runners).withHash(p.hash).build());
          outcome = step.outcome;
          for (const method of step.failures) hv.failNext(method);
          if (step.restart) owner = `process-${clock}`;
          for (let i = 0; i < 3; i++) await pass();
        }
        outcome = 'succeed';
        let passes = 0;
        while ((await pass()) > 0) expect(++passes, 'did not converge').toBeLessThan(12);
        const names = hv.guestNames();
        for (const p of desired) {
          expect(names.filter((n) => n.startsWith(`ci-runner-${p.name}.`))).toHaveLength(p.runners);
          expect(names.some((n) => n.startsWith(`ci-rebuild-${p.name}@`))).toBe(false);
        }
        expect(names.filter((n) => n.startsWith('ci-') && !desired.some((p) => n.includes(`-${p.name}`)))).toEqual([]);
      }),
      { numRuns: 60 },
    );
  });
});
