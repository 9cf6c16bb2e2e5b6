// The host's health check and enclave watchdog (host/health.ts, host/watchdog.ts): /healthz reports what
// an attested handshake with the enclave found; a killed enclave is reported down (503) and launched
// again by `ekv host`'s watchdog, through the same launch command on every world (`ekv emulate-enclave`
// here, infra/host/run-enclave.sh on Nitro).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localImage, localImageSettings } from '../cli/local/image.ts';
import { EmulatorCa } from '../emulator/ca.ts';
import { startBlobStore } from '../host/blob-store.ts';
import { checkEnclaveHealth } from '../host/health.ts';
import { loopbackOnly, startHost, type RunningHost } from '../host/host.ts';
import { nextRestartDelay, watchdogLimitsDefault, type RestartHistory, type WatchdogLimits } from '../host/watchdog.ts';
import { captureLogs } from './helpers/log-capture.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));

describe('nextRestartDelay', () => {
  const l: WatchdogLimits = { ...watchdogLimitsDefault, restartDelayBaseMs: 1000, restartDelayMaxMs: 60_000, restartsPerWindowMax: 6, restartWindowMs: 600_000 };

  it('doubles per failure in a streak, up to the maximum, and resets after a stable run', () => {
    let h: RestartHistory = { launchedAt: 0, streak: 0, restarts: [] };
    const delays: number[] = [];
    let now = 10;
    for (let i = 0; i < 8; i++) {
      const d = nextRestartDelay({ ...h, restarts: [] }, now, l); // no rate bound here
      delays.push(d.delayMs);
      h = { launchedAt: now + d.delayMs, streak: d.streak, restarts: [] };
      now = h.launchedAt + 10;
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]);
    // An enclave that ran stableResetMs starts a new streak.
    expect(nextRestartDelay(h, h.launchedAt + l.stableResetMs, l).delayMs).toBe(1000);
  });

  it('never relaunches more than restartsPerWindowMax times in any window, however fast the enclave dies', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 120_000 }), { minLength: 1, maxLength: 40 }), (runTimes) => {
      let h: RestartHistory = { launchedAt: 0, streak: 0, restarts: [] };
      for (const ran of runTimes) {
        const exitAt = h.launchedAt + ran;
        const d = nextRestartDelay(h, exitAt, l);
        expect(d.delayMs).toBeGreaterThanOrEqual(l.restartDelayBaseMs);
        const at = exitAt + d.delayMs;
        h = { launchedAt: at, streak: d.streak, restarts: [...h.restarts, at] };
      }
      const times = h.restarts;
      for (const t of times) {
        const inWindow = times.filter((u) => u >= t && u < t + l.restartWindowMs).length;
        expect(inWindow).toBeLessThanOrEqual(l.restartsPerWindowMax);
      }
    }));
  });
});

describe('health and watchdog of a node launched by `ekv host --enclave-cmd`', () => {
  let dir: string;
  let ca: EmulatorCa;
  let host: RunningHost;
  let http: string;
  const pidFile = () => join(dir, 'enclave.pid');
  const { logs, logger } = captureLogs('info');

  beforeAll(async () => {
    dir = mkdtempSync('/tmp/ekv-wd-');
    ca = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
    // One node, unsealed: the watchdog and the health check are what is under test, not KMS.
    const image = await localImage(localImageSettings({ seal: false, replicas: 1, nodes: 1 }));
    const vsockDir = join(dir, 'vsock');
    const dataDir = join(dir, 'data');
    mkdirSync(vsockDir, { recursive: true });
    mkdirSync(dataDir, { recursive: true });
    host = await startHost({
      vsockDir, listenHost: '127.0.0.1', listenPort: 0, httpPort: 0, dataDir, outboundPolicy: loopbackOnly, logger,
      startBlobStore: (socketPath, d) => startBlobStore({ socketPath, dir: d, logger }),
      healthRoots: [ca.rootPem],
      healthTimeoutMs: 2000,
      enclaveCommand: `${process.execPath} ${ekvBin} emulate-enclave --image ${image} --ca ${join(dir, 'ca')} --vsock-dir ${vsockDir} --pid-file ${pidFile()} --log-level warn`,
      watchdogLimits: { restartDelayBaseMs: 200, probeIntervalMs: 500, probeFailuresMax: 3, startGraceMs: 30_000 },
    });
    // What `ekv host --self-addr` writes: the enclave's per-node settings (its image reads them from the host).
    writeFileSync(join(dataDir, 'node-config.json'), JSON.stringify({ selfAddr: `127.0.0.1:${host.port}`, join: '' }));
    http = `http://127.0.0.1:${host.httpPort}`;
  }, 60_000);

  afterAll(async () => {
    await host?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function healthz(): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`${http}/healthz`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  async function until(what: string, pred: () => Promise<boolean>, ms: number): Promise<number> {
    const start = Date.now();
    while (!(await pred())) {
      if (Date.now() - start > ms) throw new Error(`${what} not within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
    return Date.now() - start;
  }

  it('reports 503 with a reason before the enclave answers, 200 and its ring state once it serves', async () => {
    await until('healthz 200', async () => (await healthz()).status === 200, 30_000);
    const { body } = await healthz();
    expect(body).toMatchObject({ ok: true, enclave: 'serving', ring: 'active', serving: true, watchdog: { state: 'running', restarts: 0 } });
    expect(body.pcr0).toMatch(/^[0-9a-f]{96}$/);
  }, 40_000);

  it('reports an image the release does not name as unhealthy (UNEXPECTED_IMAGE), and the named one as healthy', async () => {
    await until('healthz 200', async () => (await healthz()).status === 200, 30_000);
    const running = (await healthz()).body.pcr0 as string;
    const other = await checkEnclaveHealth({ enclaveSocket: host.enclaveSocket, roots: [ca.rootPem], expectPcr0: ['e'.repeat(96)], timeoutMs: 2000 });
    expect(other).toMatchObject({ ok: false, enclave: 'serving', code: 'UNEXPECTED_IMAGE', pcr0Expected: false });
    const named = await checkEnclaveHealth({ enclaveSocket: host.enclaveSocket, roots: [ca.rootPem], expectPcr0: ['e'.repeat(96), running.toUpperCase()], timeoutMs: 2000 });
    expect(named).toMatchObject({ ok: true, pcr0Expected: true });
  }, 40_000);

  it('a health check that trusts another root reports the enclave down (unattested), not up', async () => {
    const other = await EmulatorCa.loadOrCreate(join(dir, 'other-ca'));
    const r = await checkEnclaveHealth({ enclaveSocket: host.enclaveSocket, roots: [other.rootPem], timeoutMs: 2000 });
    expect(r).toMatchObject({ ok: false, enclave: 'down' });
    expect(r.code).toMatch(/^UNATTESTED/);
  });

  it('kill -9 of the enclave: /healthz goes 503, the watchdog relaunches it, /healthz recovers', async () => {
    await until('healthz 200', async () => (await healthz()).status === 200, 30_000);
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    process.kill(pid, 'SIGKILL');
    const downMs = await until('healthz 503', async () => (await healthz()).status === 503, 5000);
    const upMs = await until('healthz 200 again', async () => (await healthz()).status === 200, 30_000);
    const { body } = await healthz();
    expect(body).toMatchObject({ ok: true, enclave: 'serving', watchdog: { state: 'running', restarts: 1 } });
    expect(Number(readFileSync(pidFile(), 'utf8'))).not.toBe(pid);
    const metrics = await (await fetch(`${http}/metrics`)).text();
    expect(metrics).toMatch(/^ekv_host_enclave_restarts_total\{reason="exit"\} 1$/m);
    expect(metrics).toMatch(/^ekv_host_enclave_serving 1$/m);
    expect(logs.some((l) => l.msg === 'enclave exited; relaunching after backoff')).toBe(true);
    console.log(`watchdog: healthz 503 after ${downMs} ms, 200 again after ${upMs} ms more`);
  }, 40_000);

  it('a hung enclave (SIGSTOP: its socket still accepts) is reported down and relaunched as unresponsive', async () => {
    await until('healthz 200', async () => (await healthz()).status === 200, 30_000);
    const pid = Number(readFileSync(pidFile(), 'utf8'));
    process.kill(pid, 'SIGSTOP');
    try {
      const downMs = await until('healthz 503', async () => (await healthz()).status === 503, 10_000);
      expect((await healthz()).body).toMatchObject({ ok: false, enclave: 'down', code: 'TIMEOUT' });
      const upMs = await until('healthz 200 again', async () => (await healthz()).status === 200, 40_000);
      const metrics = await (await fetch(`${http}/metrics`)).text();
      expect(metrics).toMatch(/^ekv_host_enclave_restarts_total\{reason="unresponsive"\} 1$/m);
      console.log(`watchdog (hung): healthz 503 after ${downMs} ms, 200 again after ${upMs} ms more`);
    } finally {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // relaunched: the stopped one is gone
      }
    }
  }, 60_000);
});

describe('the first launch of a joining node waits for its ring-secret (startHost launchAfter)', () => {
  // A joining node's host fetches the ring secret from a member's host, which may not have founded yet; an
  // enclave launched without it refuses to start, and each refusal spends the watchdog's bounded budget.
  async function hostWith(dir: string, launchAfter: Promise<boolean>) {
    const { logger } = captureLogs('warn');
    const vsockDir = join(dir, 'vsock');
    mkdirSync(vsockDir, { recursive: true });
    const marker = join(dir, 'launched');
    const host = await startHost({
      vsockDir, listenHost: '127.0.0.1', listenPort: 0, httpPort: 0, outboundPolicy: loopbackOnly, logger,
      enclaveCommand: `${process.execPath} -e "require('fs').writeFileSync('${marker}', ''); setTimeout(() => {}, 60000)"`,
      launchAfter,
      watchdogLimits: { probeIntervalMs: 60_000, startGraceMs: 60_000 },
    });
    return { host, launched: () => existsSync(marker) };
  }

  it('launches nothing until the fetch resolves true, then launches; nothing at all when it resolves false', async () => {
    const dir = mkdtempSync('/tmp/ekv-wd-after-');
    const dir2 = mkdtempSync('/tmp/ekv-wd-after2-');
    let go!: (v: boolean) => void;
    let abandon!: (v: boolean) => void;
    const a = await hostWith(dir, new Promise<boolean>((r) => (go = r)));
    const b = await hostWith(dir2, new Promise<boolean>((r) => (abandon = r)));
    try {
      await new Promise((r) => setTimeout(r, 1500));
      expect(a.launched()).toBe(false);
      expect(a.host.watchdog?.describe()).toMatchObject({ state: 'starting', pid: null });
      go(true);
      abandon(false);
      const deadline = Date.now() + 20_000;
      while (!a.launched() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(a.launched()).toBe(true);
      await new Promise((r) => setTimeout(r, 1000));
      expect(b.launched()).toBe(false);
    } finally {
      await a.host.close();
      await b.host.close();
      rmSync(dir, { recursive: true, force: true });
      rmSync(dir2, { recursive: true, force: true });
    }
  }, 60_000);
});
