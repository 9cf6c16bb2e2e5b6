// `ekv dashboard` in a real browser (Debian's chromium driven by playwright-core) against a real local ring:
// the page shows N nodes serving; one node's enclave is frozen (SIGSTOP: it stops answering) and the page
// shows it down with the reason; it is then killed (SIGKILL) and its launcher brings it back, and the page
// shows it serving again; a node whose attestation fails (an enclave of another CA and PCR0, listed in the
// cluster file) is shown "unattested" with the reason; a screenshot is written under the test's temp dir; the
// page logs no console error.
import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type EkvClient } from '../client/index.ts';
import { startDashboard, type RunningDashboard } from '../cli/dashboard/server.ts';
import { startCustomNode, type CustomNode } from './helpers/local-ring.ts';
import { RingFixture } from './helpers/ring-fixture.ts';

const chromiumPath = '/usr/bin/chromium';
const hasChromium = existsSync(chromiumPath);
if (!hasChromium) {
  // Printed, so a skipped browser test is visible in the CI log (not a silent pass).
  console.warn(`SKIPPED test/dashboard.test.ts: no ${chromiumPath} (apt-get install -y chromium); the dashboard was not tested in a browser`);
}
const nodes = 3;
/** In the page (a string: this file is typechecked without the DOM library). */
// Polled through locators (no string evaluated in the page: its CSP has no 'unsafe-eval').
const servingRows = '#nodes tbody tr[data-state="serving"]';

describe.skipIf(!hasChromium)('ekv dashboard in headless chromium against a live ring', () => {
  let fx: RingFixture;
  let kv: EkvClient;
  let dash: RunningDashboard;
  let tmp: string;
  let stranger: CustomNode;
  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'ekv-dash-'));
    fx = await RingFixture.start({ nodes, replicas: 2 });
    stranger = await startCustomNode({ pcrs: (m) => new Map([...m, [0, new Uint8Array(48).fill(0x5a)]]) });
    await fx.waitSettled(30_000);
    const cluster = { ...fx.ring.cluster, nodes: [...fx.ring.cluster.nodes, { addr: stranger.addr }] };
    kv = await connect({ cluster, trustClusterFile: true, timeoutMs: 1000 });
    dash = await startDashboard({ cluster, kv, trust: 'the test ring\'s cluster file (emulator CA, its PCR0)', port: 0 });
  }, 90_000);
  afterAll(async () => {
    await dash?.close();
    await kv?.close();
    await stranger?.stop();
    await fx?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('shows the ring, a frozen node as down with its reason, the node back after a kill, and no console errors', async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    const frozen: number[] = [];
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      const consoleErrors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') consoleErrors.push(m.text());
      });
      page.on('pageerror', (e) => consoleErrors.push(e.message));
      await page.goto(dash.url);
      await page.waitForSelector(`#count[data-nodes="${nodes + 1}"]`, { timeout: 10_000 });
      await expect.poll(() => page.locator(servingRows).count(), { timeout: 20_000, interval: 200 }).toBe(nodes);
      expect(await page.locator('#ring g[data-state="serving"]').count()).toBe(nodes);
      // The stranger never passed attestation: shown as such, with the verifier's reason, and never on the ring.
      const strangerRow = page.locator(`#nodes tbody tr[data-node="${stranger.addr}"]`);
      await strangerRow.and(page.locator('[data-state="unattested"]')).waitFor({ timeout: 10_000 });
      await expect(strangerRow.locator('.reason').textContent()).resolves.toMatch(/UNATTESTED/);
      expect(await page.locator(`#ring g[data-node="${stranger.addr}"]`).count()).toBe(0);
      await expect(page.locator('#attested').textContent()).resolves.toMatch(/attested session/);

      // Some traffic, so ops/s and latency have something to show.
      const writer = await connect({ cluster: fx.ring.cluster, trustClusterFile: true, timeoutMs: 5000 });
      for (let i = 0; i < 60; i++) await writer.put(`dash-${i}`, `v${i}`);
      await writer.close();
      await expect.poll(async () => (await page.locator('#nodes tbody tr').evaluateAll((trs) => trs.some((tr) => / ms$/.test(tr.children[9]?.textContent ?? '')))), { timeout: 10_000, interval: 200 }).toBe(true);
      // Epoch and lease per node (the data layer's metrics, over the attested session): serving nodes show the
      // epoch of the ranges they own and how many of those they hold a lease for ("e7 · 21/21 leased").
      const epochCells = async (): Promise<string[]> => page.locator(servingRows).evaluateAll((trs) => trs.map((tr) => tr.children[7]?.textContent ?? ''));
      await expect.poll(async () => (await epochCells()).some((t) => /^e[1-9]\d* · \d+\/[1-9]\d* leased/.test(t)), { timeout: 15_000, interval: 200 }).toBe(true);
      expect((await epochCells()).every((t) => /^e\d+ · \d+\/\d+ leased/.test(t))).toBe(true);

      const victim = fx.members[1]!;
      const row = page.locator(`#nodes tbody tr[data-node="${victim.addr}"]`);
      const pid = victim.enclave!.pid;
      process.kill(pid, 'SIGSTOP');
      frozen.push(pid);
      const t0 = Date.now();
      await row.and(page.locator('[data-state="down"]')).waitFor({ timeout: 15_000 });
      const shownDownMs = Date.now() - t0;
      console.log(`dashboard: frozen node shown down after ${shownDownMs} ms (target: within 2 s)`);
      await expect(row.locator('.reason').textContent()).resolves.toMatch(/TIMEOUT|UNAVAILABLE|CLOSED/);
      expect(await page.locator(`#ring g[data-node="${victim.addr}"]`).getAttribute('data-state')).toBe('down');
      await page.screenshot({ path: join(tmp, 'down.png'), fullPage: true });

      // Killed while frozen: the launcher relaunches it (sealed state: same identity, same place) and it comes back.
      process.kill(pid, 'SIGKILL');
      frozen.length = 0;
      await row.and(page.locator('[data-state="serving"]')).waitFor({ timeout: 45_000 });
      await expect.poll(() => page.locator(servingRows).count(), { timeout: 20_000, interval: 200 }).toBe(nodes);
      const events = await page.locator('#events li').allTextContents();
      expect(events.some((e) => e.includes(victim.addr) && /stopped answering/.test(e)), events.join('\n')).toBe(true);
      expect(events.some((e) => e.includes(victim.addr) && /answering again/.test(e)), events.join('\n')).toBe(true);

      const shot = join(tmp, 'ring.png');
      await page.screenshot({ path: shot, fullPage: true });
      if (process.env.EKV_DASHBOARD_SHOT) copyFileSync(shot, process.env.EKV_DASHBOARD_SHOT);
      expect(statSync(shot).size).toBeGreaterThan(20_000);
      expect(statSync(join(tmp, 'down.png')).size).toBeGreaterThan(20_000);
      expect(consoleErrors).toEqual([]);
    } finally {
      for (const pid of frozen) {
        try {
          process.kill(pid, 'SIGCONT');
        } catch {
          // gone already
        }
      }
      await browser.close();
    }
  }, 120_000);
});
