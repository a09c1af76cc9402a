/**
 * The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core against a
 * real `corral serve`. Screenshots are kept in dist/test-artifacts/ (desktop and phone width).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanup, REPO } from '../builders/profile-dir.js';
import { eventually, startServe, TOKEN, type Served } from './serve-harness.js';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(REPO, 'dist', 'test-artifacts');

describe.skipIf(!existsSync(CHROMIUM))('the dashboard in headless chromium', () => {
  let served: Served;
  let context: BrowserContext;
  let profileDir: string;

  beforeAll(async () => {
    served = await startServe({ profiles: { web: 2, api: 1, nightly: 1 }, buildMs: 2500, outcomes: 'nightly=fail' });
    // Start from a converged host: a live template and its runners.
    expect((await served.post('/api/v1/reconcile')).status).toBe(202);
    await eventually(
      async () => {
        const status = (await (await served.get('/api/v1/status')).json()) as {
          lock: unknown;
          profiles: { name: string; runners: { ready: number; desired: number } }[];
        };
        const healthy = status.profiles.filter((p) => p.name !== 'nightly');
        return status.lock === null && healthy.every((p) => p.runners.ready === p.runners.desired) ? true : undefined;
      },
      20_000,
      'a converged host',
    );
    profileDir = await mkdtemp(join(tmpdir(), 'corral-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1280, height: 860 },
    });
    await mkdir(ARTIFACTS, { recursive: true });
  }, 60_000);

  afterAll(async () => {
    await context?.close();
    if (profileDir) await rm(profileDir, { recursive: true, force: true });
    expect(await served.stop()).toBe(0);
    await cleanup();
  });

  it('shows the profiles, rebuilds one with the token, follows the build live and opens its manifest', async () => {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(served.url);
    const web = page.locator('[data-profile="web"]');
    await expect.poll(() => web.locator('[data-testid="runners"]').textContent()).toBe('2/2 ready');
    await expect.poll(() => page.locator('#live').textContent()).toBe('live');
    expect(await page.locator('[data-profile="api"]').count()).toBe(1);
    // A profile whose build failed says why it waits and when it is retried.
    const nightly = page.locator('[data-profile="nightly"]');
    expect(await nightly.locator('[data-testid="build-status"]').textContent()).toBe('failed');
    expect(await nightly.locator('.pending').textContent()).toMatch(/backing off.*retry in \d+s/);
    const firstGen = await web.locator('dd .mono').first().textContent();
    // A marker that a reload would wipe: everything below must arrive live, over SSE.
    await page.evaluate('window.stayed = true');

    await web.locator('[data-testid="rebuild"]').click();
    await page.locator('#token-input').fill(TOKEN);
    await page.locator('#token-save').click();

    const building = web.locator('[data-testid="building"]');
    await building.waitFor({ state: 'visible', timeout: 10_000 });
    expect(await building.textContent()).toMatch(/running.*for \d+s/);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-building.png') });
    await building.waitFor({ state: 'detached', timeout: 15_000 });
    await expect.poll(() => web.locator('dd .mono').first().textContent(), { timeout: 10_000 }).not.toBe(firstGen);
    await expect
      .poll(() => web.locator('[data-testid="runners"]').textContent(), { timeout: 10_000 })
      .toBe('2/2 ready');
    expect(await web.locator('[data-testid="build-status"]').first().textContent()).toBe('succeeded');
    expect(await page.evaluate('window.stayed')).toBe(true);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png') });

    // The build page: its status, its console log and the provenance manifest.
    await web.locator('dd a.mono').first().click();
    const manifest = page.locator('[data-testid="manifest"]');
    await manifest.waitFor({ state: 'visible' });
    expect(await manifest.textContent()).toContain('provision/provision.sh');
    expect(await manifest.textContent()).toMatch(/sha256:[0-9a-f]{64}/);
    await expect.poll(() => page.locator('[data-testid="log"]').textContent()).toMatch(/booting[\s\S]*ok/);
    expect(await page.locator('#build-header').textContent()).toContain('rebuild requested at');
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-build.png'), fullPage: true });

    // History per profile, and a runner's console from there.
    await page.locator('a', { hasText: '← web' }).click();
    await expect.poll(() => page.locator('[data-build]').count()).toBe(2);
    // After the rollover the runners carry new indices (replacements are created before the old ones go).
    await page
      .locator('a', { hasText: /^ci-runner-web\.\d+$/ })
      .first()
      .click();
    await expect
      .poll(() => page.locator('[data-testid="log"]').textContent())
      .toContain('corral-runner: ci-template-web@');

    // Legible on a phone: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${served.url}/#/`);
    await web.waitFor({ state: 'visible' });
    // Evaluated in the page (strings: this file is compiled without the DOM's types).
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - window.innerWidth');
    expect(overflow).toBeLessThanOrEqual(0);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
    expect(errors).toEqual([]);
  }, 90_000);
});
