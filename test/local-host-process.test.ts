// A local node's host proxy as its own process (cli/local/host-process.ts, used by the row-2 fault test):
// `ekv host --json` announces its ports, kill -9 takes the node's TCP port and sealed-blob socket away with it,
// and a new one comes back on the same ports. Also: startLocalRing refuses a start order on a first start.
import { connect as tcpConnect } from 'node:net';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnHostProcess, type HostProcess } from '../cli/local/host-process.ts';
import { startLocalRing } from '../cli/local/ring.ts';
import { hostSocketPaths } from '../host/host.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';

function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

describe('a host proxy in its own process', () => {
  const dir = shortTempDir('ekv-hp-');
  let host: HostProcess | null = null;
  afterAll(async () => {
    await host?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('announces its ports, dies with kill -9 (its sockets gone), and starts again on the same ports', async () => {
    const o = { vsockDir: join(dir, 'vsock'), dataDir: join(dir, 'data'), listenPort: 0, httpPort: 0, logger: testLogger() };
    for (const d of [o.vsockDir, o.dataDir]) mkdirSync(d, { recursive: true, mode: 0o700 }); // as LocalNode makes them
    host = await spawnHostProcess(o);
    expect(host.pid).not.toBe(process.pid);
    expect(host.port).toBeGreaterThan(0);
    expect(await reachable(host.port)).toBe(true);
    expect(existsSync(hostSocketPaths(o.vsockDir).blobs)).toBe(true);
    const { port, httpPort, pid } = host;
    await host.kill9();
    expect(() => process.kill(pid, 0)).toThrow();
    expect(await reachable(port)).toBe(false);
    host = await spawnHostProcess({ ...o, listenPort: port, httpPort });
    expect(host.pid).not.toBe(pid);
    expect([host.port, host.httpPort]).toEqual([port, httpPort]);
    expect(await reachable(port)).toBe(true);
    const r = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
    expect(r.status).toBeLessThan(600); // the HTTP side answers (the enclave behind it is absent here)
  }, 60_000);
});

describe('startLocalRing startOrder', () => {
  it('is refused on a first start (node 0 founds the ring) and when it does not list every node once', async () => {
    const dir = shortTempDir('ekv-so-');
    try {
      await expect(startLocalRing({ dir, nodes: 3, replicas: 3, logger: testLogger(), startOrder: [1, 0, 2] })).rejects.toThrow(/restarted/);
      await expect(startLocalRing({ dir, nodes: 3, replicas: 3, logger: testLogger(), startOrder: [0, 0, 2] })).rejects.toThrow(/each of the 3/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
