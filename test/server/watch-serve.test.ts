import { afterAll, describe, expect, it } from 'vitest';
import { cleanup } from '../builders/profile-dir.js';
import { aServeRoot, eventually, readEvents, spawnServer, type Served } from './serve-harness.js';

interface Status {
  lock: { command: string; pid: number } | null;
  profiles: {
    name: string;
    template: { name: string } | null;
    runners: { ready: number };
    lastBuild: { reason?: string } | null;
  }[];
}

describe('corral watch --serve, and a serve beside a watch', () => {
  const running: Served[] = [];
  afterAll(async () => {
    for (const s of running) expect(await s.stop()).toBe(0);
    await cleanup();
  });

  it('runs API passes in the watch, streams its passes, and a separate serve signals the watch', async () => {
    const { file } = await aServeRoot({ profiles: { web: 1 } });
    const watch = await spawnServer(file, ['watch', '--serve'], { buildMs: 200 });
    running.push(watch);
    const status = async () => (await (await watch.get('/api/v1/status')).json()) as Status;
    const converged = await eventually(
      async () => {
        const s = await status();
        return s.profiles[0]?.runners.ready === 1 ? s : undefined;
      },
      15_000,
      'the watch to converge',
    );
    expect(converged.lock).toMatchObject({ command: 'watch', pid: watch.child.pid });

    // A pass asked for through the API runs in the watch, and its start and end are streamed.
    const stream = await watch.get('/api/v1/events');
    const events = readEvents(
      stream,
      (e) =>
        e.event === 'pass' &&
        (e.data as { phase: string; triggers: string[] }).phase === 'done' &&
        (e.data as { triggers: string[] }).triggers.includes('api'),
    );
    const res = await watch.post('/api/v1/reconcile');
    expect(res.status).toBe(202);
    expect(await res.json()).toMatchObject({ via: 'this watch' });
    const seen = await events;
    expect(seen.at(-1)?.data).toMatchObject({
      type: 'pass',
      by: 'watch',
      // The watch coalesces what arrived while it waited (a guest event, a follow-up): 'api' is among them.
      triggers: expect.arrayContaining(['api']) as unknown,
      durationMs: expect.any(Number),
    });

    // A forced rebuild goes through the watch's own loop.
    const before = converged.profiles[0]?.template?.name;
    expect((await watch.post('/api/v1/profiles/web/rebuild')).status).toBe(202);
    const rebuilt = await eventually(
      async () => {
        const p = (await status()).profiles[0];
        return p?.template && p.template.name !== before && p.runners.ready === 1 ? p : undefined;
      },
      15_000,
      'the rebuilt template',
    );
    expect(rebuilt.lastBuild?.reason).toMatch(/^rebuild requested at/);

    // A second process serving the same state dir cannot take the lock: it signals the watch instead.
    const beside = await spawnServer(file, ['serve']);
    running.push(beside);
    const seenByWatch = readEvents(
      await watch.get('/api/v1/events'),
      (e) => e.event === 'pass' && ((e.data as { triggers?: string[] }).triggers ?? []).includes('reload'),
    );
    const signalled = await beside.post('/api/v1/reconcile');
    expect(signalled.status).toBe(202);
    expect(await signalled.json()).toMatchObject({ via: `watch (pid ${watch.child.pid}), signalled with SIGHUP` });
    expect((await seenByWatch).at(-1)?.data).toMatchObject({ type: 'pass', by: 'watch' });
    // And it reads the watch's state: same template, the watch named as the lock holder.
    const besideStatus = (await (await beside.get('/api/v1/status')).json()) as Status;
    expect(besideStatus.lock).toMatchObject({ command: 'watch' });
    expect(besideStatus.profiles[0]?.template?.name).toBe(rebuilt.template?.name);
  });
});
