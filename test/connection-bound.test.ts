// The connection bound outside node (docs/architecture.md "Connections and the in-enclave socat"): the in-enclave
// socat forks a child per vsock connection before node's admission sees it, so its max-children is computed from
// MemTotal by infra/enclave/entrypoint.sh with the same formula as node's connectionsMax (enclave/admission.ts),
// plus a margin, and node's bound stays below socat's.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  awaitingHelloFor, clientSessionsFor, connectionBytes, connectionsFor, connectionsMargin, connectionsMax, awaitingHelloMax,
  clientSessionsMax, heldSessionsFor, peerConnectionsReserve,
} from '../enclave/admission.ts';

const entrypoint = join(import.meta.dirname, '..', 'infra', 'enclave', 'entrypoint.sh');
const GiB = 1024 ** 3;

function shellLimits(memTotalKib: number): Record<string, number> {
  // Without its --limits mode (the unfixed entrypoint) running it would start the bridges and node: refuse first.
  expect(readFileSync(entrypoint, 'utf8')).toContain('if [ "${1:-}" = "--limits" ]; then');
  const dir = mkdtempSync(join(tmpdir(), 'ekv-meminfo-'));
  try {
    const meminfo = join(dir, 'meminfo');
    writeFileSync(meminfo, `MemTotal:       ${memTotalKib} kB\nMemFree:        ${Math.floor(memTotalKib / 2)} kB\nMemAvailable:   ${memTotalKib} kB\n`);
    const r = spawnSync('sh', [entrypoint, '--limits'], { encoding: 'utf8', timeout: 5000, killSignal: 'SIGKILL', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', EKV_VSOCK_DIR: dir, EKV_MEMINFO: meminfo } });
    expect(r.status, r.stderr).toBe(0);
    return Object.fromEntries(r.stdout.trim().split(/\s+/).map((kv) => { const [k, v] = kv.split('='); return [k as string, Number(v)]; }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('connectionsMax and socat max-children', () => {
  // MemTotal of a Nitro enclave is a little under its --memory (the kernel's own reservation); also odd values.
  const sizes = [512 * 1024, 1024 * 1024, 1000 * 1024 + 7, 2 * 1024 * 1024 - 1, 3 * 1024 * 1024, 3_000_001, 8 * 1024 * 1024, 16 * 1024 * 1024 + 3, 64 * 1024 * 1024];

  it('entrypoint.sh computes the same connection bound as admission.ts connectionsFor, from MemTotal', () => {
    for (const kib of sizes) {
      const sh = shellLimits(kib);
      const n = connectionsFor(kib * 1024);
      expect(sh.connections, `MemTotal ${kib} kB`).toBe(n);
      // node refuses (or evicts hello-less connections) before socat stops accepting: node's admission decides.
      expect(sh.children_5000, `MemTotal ${kib} kB`).toBe(n + connectionsMargin);
      expect(sh.children_5000).toBeGreaterThan(n);
      expect(sh.children_5001).toBe(16);
    }
  });

  it('entrypoint.sh passes them to the inbound socat bridges', () => {
    const text = readFileSync(entrypoint, 'utf8');
    expect(text).toContain('socat "VSOCK-LISTEN:5000,fork,reuseaddr,max-children=$children_5000" "UNIX-CONNECT:$dir/enclave-5000.sock" &');
    expect(text).toContain('socat "VSOCK-LISTEN:5001,fork,reuseaddr,max-children=$children_5001" "UNIX-CONNECT:$dir/enclave-5001.sock" &');
    expect(text).not.toMatch(/VSOCK-LISTEN:500[01],fork,reuseaddr"? /); // no bridge without its bound
  });

  it('a quarter of the memory over the per-connection cost, within [512, 8192]', () => {
    expect(connectionBytes).toBe(512 * 1024);
    expect(connectionsFor(1 * GiB)).toBe(512);
    expect(connectionsFor(3 * GiB)).toBe(1536);
    expect(connectionsFor(16 * GiB)).toBe(8192);
    expect(connectionsFor(64 * GiB)).toBe(8192); // the former fixed value is the maximum
    expect(connectionsFor(0)).toBe(512);
    for (const mem of [1 * GiB, 2 * GiB, 3 * GiB, 4 * GiB]) {
      // what the connections and the socat children beyond them may cost stays within a quarter (plus the margin)
      expect(connectionsFor(mem) * connectionBytes).toBeLessThanOrEqual(mem / 4);
    }
  });

  it('the derived limits stay consistent from the smallest enclave up', () => {
    for (const mem of [0, 512 * 1024 ** 2, 1 * GiB, 1.5 * GiB, 3 * GiB, 8 * GiB, 16 * GiB, 256 * GiB]) {
      const c = connectionsFor(mem);
      const hello = awaitingHelloFor(c);
      const sessions = clientSessionsFor(c);
      expect(sessions + hello + peerConnectionsReserve).toBe(c);
      expect(sessions, `${mem}`).toBeGreaterThanOrEqual(64);
      expect(hello, `${mem}`).toBeGreaterThanOrEqual(64);
      expect(heldSessionsFor(mem), `${mem}`).toBeLessThanOrEqual(sessions);
    }
    expect([awaitingHelloFor(512), clientSessionsFor(512)]).toEqual([128, 128]); // 1 GiB
    expect([awaitingHelloFor(1536), clientSessionsFor(1536)]).toEqual([384, 896]); // 3 GiB
    expect([awaitingHelloFor(8192), clientSessionsFor(8192)]).toEqual([1024, 6912]); // the former values
    // this process's own values come from the same functions
    expect(connectionsMax).toBe(connectionsFor(totalmem()));
    expect(awaitingHelloMax).toBe(awaitingHelloFor(connectionsMax));
    expect(clientSessionsMax).toBe(clientSessionsFor(connectionsMax));
  });
});
