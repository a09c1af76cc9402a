import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPass, type PassDeps } from '../../src/apply/pass.js';
import type { HostConfig } from '../../src/config/host-config.js';
import { MemoryHypervisor } from '../../src/hypervisor/memory/memory-hypervisor.js';
import { makeGen, rebuildName } from '../../src/hypervisor/names.js';
import type { CompiledView } from '../../src/sources/view.js';
import { BackoffStore } from '../../src/state/backoff-store.js';
import { EventLog } from '../../src/state/events.js';
import { HostError } from '../../src/errors.js';
import { NOW, aProfile } from '../builders/guests.js';

let stateDir: string;
beforeAll(async () => (stateDir = await mkdtemp(join(tmpdir(), 'corral-pass-'))));
afterAll(async () => rm(stateDir, { recursive: true, force: true }));

function world(inFlight?: Set<string>) {
  const profile = aProfile().runners(0).build();
  const view: CompiledView = {
    format_version: 1,
    hash: 'h',
    generation: 1,
    compiledAt: '',
    masked: [],
    profiles: [profile],
  };
  const hypervisor = new MemoryHypervisor({ prefix: 'ci', clock: () => NOW, outcome: () => 'hang' });
  const deps: PassDeps = {
    config: { prefix: 'ci', keepTemplates: 2, concurrency: { builds: 1, clones: 1 } } as HostConfig,
    hypervisor,
    log: pino({ level: 'silent' }),
    clock: () => NOW,
    sleep: async () => {},
    events: new EventLog(stateDir),
    backoff: new BackoffStore(stateDir, { initialSeconds: 60, maxSeconds: 60 }),
    pollMs: 0,
    ownerToken: 'me',
    ...(inFlight ? { inFlight } : {}),
  };
  return { profile, view, hypervisor, deps };
}

describe('runPass', () => {
  it('hands its in-flight builds to the planner: our own rebuild that nobody waits on is discarded', async () => {
    const { profile, view, hypervisor, deps } = world(new Set());
    const gen = makeGen(NOW, profile.inputsHash);
    const name = rebuildName('ci', profile.name, gen);
    await hypervisor.startBuild({
      name,
      profile,
      meta: {
        profile: profile.name,
        gen,
        inputsHash: profile.inputsHash,
        baseVersion: '',
        createdAt: NOW.toISOString(),
        owner: 'me',
      },
    });
    const pass = await runPass(view, deps);
    expect(pass.plan.actions.map((a) => a.action)).toEqual(['discard', 'build']);
    expect(pass.plan.actions[0]?.guest).toBe(name);
  });

  it('does not queue a second build while its first is still queued or starting', async () => {
    const inFlight = new Set<string>();
    const { view, hypervisor, deps } = world(inFlight);
    // The first build never gets as far as defining its guest, so observation cannot see it.
    hypervisor.startBuild = () => new Promise(() => undefined);
    const first = await runPass(view, deps);
    expect(first.plan.actions.map((a) => a.action)).toEqual(['build']);
    const second = await runPass(view, deps);
    expect(second.plan.actions).toEqual([]);
    expect(second.plan.waits[0]?.reason).toMatch(/^build ci-rebuild-tiny@\S+ queued or starting$/);
  });

  it('a host problem while building is reported as one and backed off, never judged a failed build', async () => {
    const { view, hypervisor, deps } = world();
    const failures = new BackoffStore(await mkdtemp(join(tmpdir(), 'corral-host-')), {
      initialSeconds: 60,
      maxSeconds: 60,
    });
    hypervisor.startBuild = () =>
      Promise.reject(
        new HostError(
          "libvirt could not start ci-rebuild-tiny@x: Failed to connect socket to '/run/libvirt/virtlogd-sock': No such file or directory",
        ),
      );
    const pass = await runPass(view, { ...deps, backoff: failures });
    const [result] = await pass.builds;
    expect(result).toMatchObject({
      ok: false,
      error: expect.stringMatching(/^host problem: libvirt could not start .*virtlogd-sock/),
    });
    expect(Object.values(await failures.read())[0]).toMatchObject({ failures: 1, host: true });
    const next = await runPass(view, { ...deps, backoff: failures });
    expect(next.plan.actions).toEqual([]);
    expect(next.plan.waits[0]?.reason).toMatch(/backing off after a host problem until .*virtlogd-sock/);
  });
});
