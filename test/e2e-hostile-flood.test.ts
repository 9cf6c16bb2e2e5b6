// A running node under floods of hostile first frames (issue 16): tag-51/225 bombs, bignums, deep
// nesting, oversized declared lengths, oversized frame lengths, slow writers, and sealed 256 KiB
// bignum frames from anonymous clients after a valid handshake; meanwhile a normal client keeps
// doing put/get. Asserts that every normal request succeeds and that the enclave's peak RSS stays
// bounded (generous bounds: no timing thresholds); prints the client's latency before and during
// the flood and the enclave's RSS.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type EkvClient } from '../client/index.ts';
import { documentVerifier } from '../client/trust.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { encodeFrame } from '../protocol/frame.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { connectHandshake } from '../protocol/handshake.ts';
import { bignum, helloWith, hostileShapes } from './helpers/hostile-cbor.ts';
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

function addr(): { host: string; port: number } {
  const [host, port] = t.node().addr.split(':') as [string, string];
  return { host, port: Number(port) };
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

/** One hostile connection: send `bytes` (in pieces, slowly, when `slow`), wait for the close. */
function hostile(bytes: Buffer, slow = false): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(addr());
    const done = () => {
      clearTimeout(timer);
      clearInterval(drip);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, slow ? 3000 : 5000);
    let drip: NodeJS.Timeout | undefined;
    s.on('data', () => undefined); // read the error frame, so the close is seen
    s.on('error', done);
    s.on('end', done);
    s.on('close', done);
    s.on('connect', () => {
      if (!slow) {
        s.write(bytes);
        return;
      }
      let off = 0;
      drip = setInterval(() => {
        if (off >= bytes.length) return;
        s.write(bytes.subarray(off, off + 64));
        off += 64;
      }, 100);
    });
  });
}

/** After a valid anonymous handshake, one sealed frame holding a 256 KiB bignum (the 3-minute CPU pin of issue 16). */
async function sealedBignum(): Promise<void> {
  const socket = net.connect(addr());
  await new Promise((r, j) => socket.once('connect', r).once('error', j));
  const fs = new FramedSocket(socket, handshakeBytesMax);
  try {
    const { session } = await connectHandshake(fs, { mode: 'client', verifyServer: documentVerifier(t.cluster.trust) });
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    // The test seals bytes no encoder of ours would write, with the session's own sealer.
    const sealer = (session as unknown as { sealer: { seal(b: Uint8Array): Buffer } }).sealer;
    fs.write(sealer.seal(Buffer.concat([Buffer.from([0x81]), helloWith(bignum(256 * 1024))])));
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  } finally {
    fs.destroy();
  }
}

describe('a node under a flood of hostile hellos', () => {
  it('keeps serving a normal client with bounded memory', { timeout: 120_000 }, async () => {
    const pid = t.node().pids().enclave as number;
    expect(pid).toBeGreaterThan(0);
    for (let i = 0; i < 10; i++) await roundTrip(i); // warm up
    const before = status(pid);
    const baseline: number[] = [];
    for (let i = 0; i < 60; i++) baseline.push(await roundTrip(i));

    const shapes = hostileShapes().map((s) => encodeFrame(s.bytes));
    shapes.push(Buffer.from([0xff, 0xff, 0xff, 0xff])); // a frame length of 4 GiB
    let sent = 0;
    let sealed = 0;
    const deadline = Date.now() + floodMs;
    const flood = Array.from({ length: attackers }, async (_, a) => {
      for (let k = 0; Date.now() < deadline; k++) {
        if (a === 0) {
          await sealedBignum();
          sealed++;
        } else if (a === 1) {
          await hostile(shapes[k % shapes.length] as Buffer, true);
          sent++;
        } else {
          const i = (a * 7 + k) % shapes.length;
          const t0 = performance.now();
          await hostile(shapes[i] as Buffer);
          if (process.env.EKV_FLOOD_DEBUG) console.log(`shape ${i} ${(performance.now() - t0).toFixed(0)} ms`);
          sent++;
        }
      }
    });
    const during: number[] = [];
    const failures: string[] = [];
    for (let i = 0; Date.now() < deadline; i++) {
      try {
        during.push(await roundTrip(i));
      } catch (err) {
        failures.push(String(err));
      }
    }
    await Promise.all(flood);
    const after = status(pid);
    for (let i = 0; i < 5; i++) await roundTrip(i); // still serving once the flood is over

    const fmt = (xs: number[]) => `p50 ${percentile(xs, 50).toFixed(1)} ms, p99 ${percentile(xs, 99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms (${xs.length} round trips)`;
    console.log(
      [
        `hostile connections: ${sent} first frames (${shapes.length} shapes, one slow writer) + ${sealed} sealed 256 KiB bignum frames, ${attackers} attackers for ${floodMs} ms`,
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
