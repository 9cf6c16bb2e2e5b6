// A running node under floods of hostile first frames (issue 16): tag-51/225 bombs, bignums, deep
// nesting, oversized declared lengths, oversized frame lengths, slow writers, and sealed 256 KiB
// bignum frames from anonymous clients after a valid handshake; meanwhile a normal client keeps
// doing put/get. Asserts that every normal request succeeds and that the enclave's peak RSS stays
// bounded (generous bounds: no timing thresholds); prints the client's latency before and during
// the flood and the enclave's RSS.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type EkvClient } from '../client/index.ts';
import { startTestRing, type TestRing } from './helpers/local-ring.ts';

const floodMs = Number(process.env.EKV_FLOOD_MS ?? 6000);
const attackers = 12;
/** Growth of the enclave's peak RSS the flood may cause (the 800-byte bomb alone took one from 120 MB to 1.1 GB). */
const rssGrowthMaxMb = 200;

let t: TestRing;
let kv: EkvClient;

beforeAll(async () => {
  t = await startTestRing({ nodes: 1 });
  kv = await connect({ cluster: t.cluster, trustClusterFile: true, timeoutMs: 10_000 });
}, 60_000);

afterAll(async () => {
  await kv?.close();
  await t?.stop();
});

function status(pid: number): { rssMb: number; peakMb: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

/** put then get of a fresh value; returns the round trip in ms. */
async function roundTrip(i: number): Promise<number> {
  const value = `v${i} ${randomBytes(6).toString('hex')}`;
  const start = performance.now();
  await kv.put(`flood-canary-${i % 16}`, value);
  const got = (await kv.get(`flood-canary-${i % 16}`)).toString();
  if (got !== value) throw new Error(`wrong value ${got}`);
  return performance.now() - start;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] ?? NaN;
}

/** The attackers, in a child process (test/helpers/flood-attacker.ts); resolves with its counts. */
function flood(): { started: Promise<void>; done: Promise<{ sent: number; sealed: number; shapes: number }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/flood-attacker.ts', t.node().addr, t.clusterFile, String(floodMs), String(attackers)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  let onStart: () => void = () => undefined;
  const started = new Promise<void>((r) => (onStart = r));
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.startsWith('start\n')) onStart();
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), floodMs + 60_000);
  const done = new Promise<{ sent: number; sealed: number; shapes: number }>((resolve, reject) => {
    child.on('exit', (code) => {
      clearTimeout(killer);
      onStart();
      if (code !== 0) return reject(new Error(`attacker exited ${code}`));
      resolve(JSON.parse(out.trim().split('\n').pop() as string));
    });
  });
  return { started, done };
}

describe('a node under a flood of hostile hellos', () => {
  it('keeps serving a normal client with bounded memory', { timeout: 120_000 }, async () => {
    const pid = t.node().pids().enclave as number;
    expect(pid).toBeGreaterThan(0);
    for (let i = 0; i < 10; i++) await roundTrip(i); // warm up
    const before = status(pid);
    const baseline: number[] = [];
    for (let i = 0; i < 60; i++) baseline.push(await roundTrip(i));

    const attack = flood();
    await attack.started;
    const deadline = Date.now() + floodMs;
    const during: number[] = [];
    const failures: string[] = [];
    for (let i = 0; Date.now() < deadline; i++) {
      try {
        during.push(await roundTrip(i));
      } catch (err) {
        failures.push(String(err));
      }
    }
    const { sent, sealed, shapes } = await attack.done;
    const after = status(pid);
    for (let i = 0; i < 5; i++) await roundTrip(i); // still serving once the flood is over

    const fmt = (xs: number[]) => `p50 ${percentile(xs, 50).toFixed(1)} ms, p99 ${percentile(xs, 99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms (${xs.length} round trips)`;
    console.log(
      [
        `hostile connections: ${sent} first frames (${shapes} shapes, one slow writer; attackers in their own process) + ${sealed} sealed 256 KiB bignum frames, ${attackers} attackers for ${floodMs} ms`,
        `normal client before: ${fmt(baseline)}`,
        `normal client during: ${fmt(during)}`,
        `enclave RSS: before ${before.rssMb.toFixed(0)} MB (peak so far ${before.peakMb.toFixed(0)} MB), after ${after.rssMb.toFixed(0)} MB (peak ${after.peakMb.toFixed(0)} MB)`,
      ].join('\n'),
    );
    expect(failures).toEqual([]);
    expect(during.length).toBeGreaterThan(0);
    expect(sent).toBeGreaterThan(50);
    expect(after.peakMb - before.peakMb).toBeLessThan(rssGrowthMaxMb);
  });
});
