import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { converge, runPass } from '../../src/reconcile/pass.js';
import { makeGen, rebuildName } from '../../src/hypervisor/names.js';
import { HostError } from '../../src/errors.js';
import { NOW, aProfile } from '../builders/guests.js';
import { aView, memoryWorld } from '../builders/world.js';

let stateDir: string;
// Builds that hang poll until the file ends; stopping ends their loops.
let stop = () => {};
const stopping = new Promise<void>((resolve) => (stop = resolve));
beforeAll(async () => (stateDir = await mkdtemp(join(tmpdir(), 'corral-pass-'))));
afterAll(async () => {
  stop();
  await rm(stateDir, { recursive: true, force: true });
});

function world(dir = stateDir) {
  const profile = aProfile().runners(0).build();
  const w = memoryWorld({
    stateDir: dir,
    clock: () => NOW,
    // A real timer: a hanging build must not starve the event loop with a microtask-only poll.
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    hypervisor: { outcome: () => 'hang' },
    config: { concurrency: { builds: 1, clones: 1 } },
    ownerToken: 'me',
  });
  w.deps.stopping = stopping;
  return { profile, view: aView([profile]), ...w };
}

describe('runPass', () => {
  it('hands the in-flight builds it is given to the planner: our own rebuild that nobody waits on is discarded', async () => {
    const { profile, view, hypervisor, deps } = world();
    const gen = makeGen(NOW, profile.inputsHash);
    const name = rebuildName('ci', profile.name, gen);
    const meta = {
      profile: profile.name,
      gen,
      inputsHash: profile.inputsHash,
      baseVersion: '',
      createdAt: NOW.toISOString(),
      owner: 'me',
    };
    await hypervisor.startBuild({ name, profile, meta, baseImage: '/images/base.qcow2' });
    const orphaned = await runPass(view, deps, { inFlight: [] });
    expect(orphaned.plan.actions.map((a) => a.action)).toEqual(['discard', 'build']);
    expect(orphaned.plan.actions[0]?.guest).toBe(name);
  });

  it('returns the builds it started, and a pass told about them does not queue a second one', async () => {
    const { view, hypervisor, deps } = world();
    // The first build never gets as far as defining its guest, so observation cannot see it.
    hypervisor.startBuild = () => new Promise(() => undefined);
    const first = await runPass(view, deps, { inFlight: [] });
    expect(first.builds.map((b) => b.profile)).toEqual(['tiny']);
    const second = await runPass(view, deps, { inFlight: first.builds.map((b) => b.name) });
    expect(second.plan.actions).toEqual([]);
    expect(second.plan.waits[0]?.reason).toMatch(/^build ci-rebuild-tiny@\S+ queued or starting$/);
  });

  it('a host problem while building is reported as one and backed off, never judged a failed build', async () => {
    // Its own state dir: the back-off it records must not hold up the other tests' builds.
    const { view, hypervisor, deps } = world(await mkdtemp(join(tmpdir(), 'corral-host-')));
    hypervisor.startBuild = () =>
      Promise.reject(
        new HostError(
          "libvirt could not start ci-rebuild-tiny@x: Failed to connect socket to '/run/libvirt/virtlogd-sock': No such file or directory",
        ),
      );
    const pass = await runPass(view, deps, { inFlight: [] });
    const [result] = await Promise.all(pass.builds.map((b) => b.done));
    expect(result).toMatchObject({
      ok: false,
      error: expect.stringMatching(/^host problem: libvirt could not start .*virtlogd-sock/),
    });
    expect(Object.values(await deps.backoff.read())[0]).toMatchObject({ failures: 1, host: true });
    const next = await runPass(view, deps, { inFlight: [] });
    expect(next.plan.actions).toEqual([]);
    expect(next.plan.waits[0]?.reason).toMatch(/backing off after a host problem until .*virtlogd-sock/);
  });

  it('keeps the kind of each failure: a hypervisor hiccup comes back as transient', async () => {
    const { view, hypervisor, deps } = world();
    hypervisor.failNext('startBuild', 1);
    const pass = await runPass(view, deps, { inFlight: [] });
    const [result] = await Promise.all(pass.builds.map((b) => b.done));
    expect(result).toMatchObject({ ok: false, errorKind: 'transient' });
  });
});

describe('converge (reconcile --once)', () => {
  it('passes again after a back-off when the only failures were transient, and converges', async () => {
    const profile = aProfile().runners(2).build();
    const slept: number[] = [];
    const w = memoryWorld({ stateDir, clock: () => NOW, sleep: async (ms) => void slept.push(ms), ownerToken: 'me' });
    await converge(aView([profile]), w.deps); // the template and two runners
    w.hypervisor.setState('ci-runner-tiny.1', 'shutoff');
    w.hypervisor.failNext('createRunner', 3);
    const result = await converge(aView([profile]), w.deps);
    expect(result.results.filter((r) => !r.ok).map((r) => r.errorKind)).toEqual([
      'transient',
      'transient',
      'transient',
    ]);
    expect(slept).toEqual([1000, 2000, 4000]);
    expect(result.last.actions).toEqual([]);
    expect(w.hypervisor.guestNames().filter((n) => n.startsWith('ci-runner-'))).toHaveLength(2);
  });
});
