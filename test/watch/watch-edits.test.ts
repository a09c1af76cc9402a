import { execFileSync } from 'node:child_process';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  assertBuilt,
  makeFixture,
  profileYaml,
  runCli,
  runners,
  settled,
  startWatch,
  stopWatch,
  waitFor,
  writeProfile,
  useWatchFixtures,
} from './harness.js';

const { defer, setup } = useWatchFixtures();

describe('corral watch: edits (real chokidar, memory backend)', { timeout: 180_000 }, () => {
  beforeAll(assertBuilt);

  it('starts a single pass within 1 s of an edit', async () => {
    const { fx, w } = await setup();
    await settled(fx, w, { p1: 2 });
    const edited = Date.now();
    await writeFile(join(fx.src, 'p1', 'profile.yaml'), profileYaml(3));
    const [pass] = await waitFor(
      () => w.passesSince(edited, 'change').length > 0 && w.passesSince(edited, 'change'),
      'a pass after the edit',
    );
    expect(pass!.time - edited).toBeLessThan(1000);
    expect(pass!.paths).toContain(join(fx.src, 'p1', 'profile.yaml'));
    await settled(fx, w, { p1: 3 });
    await new Promise((r) => setTimeout(r, 800)); // longer than the debounce: no second pass for one edit
    expect(w.passesSince(edited, 'change')).toHaveLength(1);
  });

  it("coalesces an editor's atomic save (write temp, rename over) into one pass", async () => {
    const { fx, w } = await setup();
    await settled(fx, w, { p1: 2 });
    const saved = Date.now();
    const file = join(fx.src, 'p1', 'profile.yaml');
    await writeFile(`${file}.tmp-4711`, profileYaml(1));
    await rename(`${file}.tmp-4711`, file);
    await settled(fx, w, { p1: 1 });
    await new Promise((r) => setTimeout(r, 800));
    expect(w.passesSince(saved, 'change')).toHaveLength(1);
  });

  it('turns a git checkout of 200 files into at most 2 passes', async () => {
    const fx = await makeFixture();
    defer(fx.cleanup);
    await writeProfile(fx.src, 'p1', 2);
    const git = (...args: string[]) =>
      execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.org', ...args], {
        cwd: fx.src,
        stdio: 'pipe',
      });
    const writeFiles = (tag: string) =>
      Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          writeFile(join(fx.src, 'p1', 'provision', `f${String(i).padStart(3, '0')}.conf`), `${tag} ${i}\n`),
        ),
      );
    await writeFiles('one');
    git('init', '-q', '-b', 'one');
    git('add', '-A');
    git('commit', '-q', '-m', 'one');
    git('checkout', '-q', '-b', 'two');
    await writeFiles('two');
    await writeFile(join(fx.src, 'p1', 'profile.yaml'), profileYaml(4));
    git('commit', '-q', '-am', 'two');
    git('checkout', '-q', 'one');
    const w = startWatch(fx);
    defer(() => stopWatch(w));
    await settled(fx, w, { p1: 2 });
    const checkout = Date.now();
    git('checkout', '-q', 'two');
    await settled(fx, w, { p1: 4 });
    await new Promise((r) => setTimeout(r, 1000));
    const passes = w.passesSince(checkout, 'change');
    expect(passes.length).toBeGreaterThanOrEqual(1);
    expect(passes.length).toBeLessThanOrEqual(2);
    expect(passes.reduce((n, p) => n + (p.events as number), 0)).toBeGreaterThanOrEqual(200);
  });

  it('keeps the last good view on broken YAML, reports it once, and resumes when fixed', async () => {
    const { fx, w } = await setup();
    await settled(fx, w, { p1: 2 });
    const broke = Date.now();
    await writeFile(join(fx.src, 'p1', 'profile.yaml'), 'runners: [3\n');
    const errors = () => w.logs.filter((l) => l.time >= broke && l.msg.startsWith('the sources do not compile'));
    await waitFor(() => errors().length > 0, 'the compile error in the log');
    const status = JSON.parse(
      (await runCli(['status', '--json', '--config', fx.config, '--hypervisor', 'memory'])).stdout,
    ) as {
      problems: { file: string }[];
    };
    expect(status.problems.map((p) => p.file)).toContain(join(fx.src, 'p1', 'profile.yaml'));
    w.child.kill('SIGHUP'); // another pass over the same broken file
    await waitFor(
      () => w.passesSince(broke, 'reload').length > 0 && w.logs.at(-1)?.msg === 'pass done',
      'the reload pass',
    );
    expect(errors()).toHaveLength(1);
    expect(await runners(fx, 'p1')).toBe(2);
    await writeFile(join(fx.src, 'p1', 'profile.yaml'), profileYaml(3));
    await settled(fx, w, { p1: 3 });
    expect(w.logs.some((l) => l.msg === 'the sources compile cleanly again')).toBe(true);
    const fixed = JSON.parse(
      (await runCli(['status', '--json', '--config', fx.config, '--hypervisor', 'memory'])).stdout,
    ) as {
      problems: unknown[];
    };
    expect(fixed.problems).toEqual([]);
  });

  it('follows symlinked profile dirs', async () => {
    const { fx, w } = await setup();
    const elsewhere = await writeProfile(join(fx.root, 'elsewhere'), 'p3', 1);
    execFileSync('ln', ['-s', elsewhere, join(fx.src, 'p3')]);
    await settled(fx, w, { p1: 2, p3: 1 });
    await writeFile(join(elsewhere, 'profile.yaml'), profileYaml(2));
    await settled(fx, w, { p1: 2, p3: 2 });
  });
});
