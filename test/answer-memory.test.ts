// A node-wide bound on client answer memory (docs/architecture.md "Work before authentication"; protocol/answer-memory.ts).
//
// Before: each client session's queued answers were bounded (32 MiB budget, closed past 64 MiB), but nothing bounded
// their sum: N sessions that send gets of large values and never read made the enclave hold N x 32 MiB (the session
// table admits 6,912). Now every client answer queued, or reserved for a request being worked on, counts in one
// node-wide AnswerMemory; a request that does not fit waits, and the session holding the most whose unread answers
// have not emptied for stallMs is closed (UNAVAILABLE/SLOW_READER) to make room.
//
// The servers here use small bounds (8 MiB node-wide, 512 KiB answers) so each test is short.
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { AnswerMemory, answerReserveBytes } from '../protocol/answer-memory.ts';
import type { EkvError } from '../protocol/errors.ts';
import { RpcClient } from '../protocol/rpc.ts';
import type { SecureSession } from '../protocol/session.ts';
import type { EnclaveServer } from '../enclave/server.ts';
import { fakeEnclaveServer } from './helpers/fake-attest.ts';

// A full collection before measuring process memory, so what is counted is what is held (live), not garbage.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const until = async (cond: () => boolean, ms: number) => {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
};
/** Bytes of ArrayBuffers alive (after full collections: backing stores are freed a little after the collection). */
async function liveBuffers(base: number): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage().arrayBuffers - base;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;
const answerBytes = 512 * 1024;
const bytesMax = 8 * MiB;

type Opened = { socket: net.Socket; session: SecureSession };

/** Sessions that send `gets` gets of large values and never read a byte of their answers. */
async function hostile(open: () => Promise<Opened>, sessions: number, gets: number): Promise<Opened[]> {
  const out: Opened[] = [];
  for (let s = 0; s < sessions; s++) {
    const o = await open();
    o.socket.pause();
    for (let i = 1; i <= gets; i++) o.session.send({ i, o: 'get', k: Buffer.from('k') });
    out.push(o);
  }
  return out;
}

/** The enclave side's queued answer bytes, summed over every connection (what its sockets hold, not our count). */
function queuedOnServer(server: EnclaveServer): number {
  let sum = 0;
  for (const s of (server as unknown as { sockets: Set<net.Socket> }).sockets) sum += s.writableLength;
  return sum;
}

const accounting = (server: EnclaveServer): { used: number; peak: number; evicted: number } | undefined =>
  (server as unknown as { answerMemory?: { used: number; peak: number; evicted: number } }).answerMemory;

describe('node-wide answer memory', () => {
  let stop: (() => Promise<void>) | null = null;
  afterEach(async () => {
    await stop?.();
    stop = null;
  });

  it('(a) 8 sessions that never read (each asking 40 x 512 KiB) cannot push the node past its bound', async () => {
    // No eviction here (stall time far beyond the test): the bound alone holds.
    const f = await fakeEnclaveServer('ekv-am-a-', () => ({ v: Buffer.alloc(answerBytes, 7) }), { answerMemory: { bytesMax, stallMs: 600_000 } });
    stop = f.stop;
    const base = await liveBuffers(0);
    let peakQueued = 0;
    let held = 0;
    const sample = () => {
      peakQueued = Math.max(peakQueued, queuedOnServer(f.server));
    };
    const sampler = setInterval(sample, 5);
    const attackers = await hostile(f.open, 8, 40);
    try {
      // Until the attackers' requests have filled the bound (a fixed wait was too short at load 8), then a little more.
      await until(() => (accounting(f.server)?.peak ?? 0) > bytesMax - 2 * answerReserveBytes, 10_000);
      await sleep(500);
      sample();
      held = await liveBuffers(base); // while the attackers are still connected
    } finally {
      clearInterval(sampler);
      for (const a of attackers) a.socket.destroy();
    }
    const acct = accounting(f.server);
    console.log(`(a) peak queued on the enclave's sockets ${peakQueued} B; accounting peak ${acct?.peak}; buffers held after a full GC ${held} B`);
    // Before: ~8 x 32 MiB = 256 MiB queued (each session's own budget, none across them).
    expect(peakQueued).toBeLessThanOrEqual(bytesMax);
    expect(acct?.peak ?? Infinity).toBeLessThanOrEqual(bytesMax);
    // Some of it was used: the bound, not an accident, is what held them.
    expect(acct?.peak ?? 0).toBeGreaterThan(bytesMax - 2 * answerReserveBytes);
    // Process memory: the queued answers are live buffers (before: hundreds of MiB here too).
    expect(held).toBeLessThan(32 * MiB); // measured 20.5 MB with 8 or 16 attackers (a fixed overhead beyond the 8 MiB); before: 178 MB
    // Every session closed returned what it held: nothing leaks from the count (a leak would wedge the node).
    await until(() => (acct?.used ?? 0) === 0, 3000);
    expect(acct?.used).toBe(0);
  }, 20_000);

  it('(b, c) an honest reading client completes its gets while never-reading sessions hold the node\'s answer memory; the sessions closed are the hostile ones', async () => {
    const f = await fakeEnclaveServer('ekv-am-b-', () => ({ v: Buffer.alloc(answerBytes, 7) }), { answerMemory: { bytesMax, stallMs: 1000 } });
    stop = f.stop;
    let peakQueued = 0;
    const sampler = setInterval(() => (peakQueued = Math.max(peakQueued, queuedOnServer(f.server))), 5);
    const attackers = await hostile(f.open, 6, 40);
    await sleep(200); // they now hold the node's answer memory (before: 6 x their session budget)
    const { session } = await f.open();
    const honest = new RpcClient(session);
    let honestClosed: EkvError | null = null;
    honest.onClose = (e) => (honestClosed = e);
    const t0 = Date.now();
    try {
      // 40 gets of 512 KiB, 4 at a time: 20 MiB in all, more than the node-wide bound.
      const got: Array<number | string> = [];
      for (let round = 0; round < 10; round++) {
        const r = await Promise.all(Array.from({ length: 4 }, () => honest.call('get', { k: Buffer.from('k') }, 10_000).then((a) => (a.v as Uint8Array).length, (e: EkvError) => e.code)));
        got.push(...r);
      }
      expect(got.filter((g) => g !== answerBytes)).toEqual([]);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(honestClosed).toBeNull();
      expect(honest.closed).toBe(false);
      // (c) Closed to make room: hostile sessions only. Each hostile client now reads: the ones the node closed see
      // the end of their connection; the others stay open.
      const evicted = accounting(f.server)?.evicted ?? 0;
      expect(evicted).toBeGreaterThanOrEqual(1);
      const closed = await Promise.all(attackers.map((a) => new Promise<boolean>((resolve) => {
        const t = setTimeout(() => resolve(false), 2000);
        a.session.start(() => undefined, () => {
          clearTimeout(t);
          resolve(true);
        });
        a.socket.resume();
      })));
      expect(closed.filter(Boolean).length).toBe(evicted);
      expect(peakQueued).toBeLessThanOrEqual(bytesMax);
    } finally {
      clearInterval(sampler);
      honest.close();
      for (const a of attackers) a.socket.destroy();
    }
    await until(() => accounting(f.server)?.used === 0, 3000);
    expect(accounting(f.server)?.used).toBe(0);
  }, 25_000);
});

describe('AnswerMemory (pure bookkeeping, injected clock)', () => {
  it('closes the largest holder whose unread answers have not emptied for stallMs, never a prompt reader', () => {
    let t = 0;
    const pool = new AnswerMemory({ bytesMax: 10 * answerReserveBytes, stallMs: 1000, relieveEveryMs: 0, now: () => t });
    const closed: string[] = [];
    const open = (name: string) => pool.open(() => closed.push(name));
    const big = open('big-prompt'); // holds the most but drains: its queue emptied recently
    const stalled = open('stalled');
    const small = open('small-stalled');
    for (let i = 0; i < 4; i++) expect(big.tryReserve()).toBe(true);
    for (let i = 0; i < 3; i++) expect(stalled.tryReserve()).toBe(true);
    expect(small.tryReserve()).toBe(true);
    // Sealed: reservations become frames queued for the reader.
    big.unreserve(4);
    big.queued(4 * answerReserveBytes);
    stalled.unreserve(3);
    stalled.queued(3 * answerReserveBytes);
    small.unreserve(1);
    small.queued(answerReserveBytes);
    expect(pool.used).toBe(8 * answerReserveBytes);
    t = 5000;
    big.written(4 * answerReserveBytes); // read everything at t = 5000
    big.queued(4 * answerReserveBytes);
    const honest = open('honest');
    expect(honest.tryReserve()).toBe(true);
    expect(honest.tryReserve()).toBe(true);
    expect(honest.tryReserve()).toBe(false); // full: 10 reservations' worth
    t = 5500;
    expect(pool.relieve()).toBe(true);
    expect(closed).toEqual(['stalled']);
    expect(pool.used).toBe(7 * answerReserveBytes);
    expect(honest.tryReserve()).toBe(true);
    // Never past the bound, whatever the order.
    expect(pool.peak).toBeLessThanOrEqual(pool.bytesMax);
    // Every close returns what the session held.
    for (const m of [big, small, honest]) m.close();
    expect(pool.used).toBe(0);
  });

  it('requests kept waiting with no answer for stallMs count as stalled too; a session just made busy does not', () => {
    let t = 0;
    const pool = new AnswerMemory({ bytesMax: 8 * answerReserveBytes, stallMs: 1000, relieveEveryMs: 0, now: () => t });
    const closed: string[] = [];
    const waiting = pool.open(() => closed.push('waiting'));
    const fresh = pool.open(() => closed.push('fresh'));
    for (let i = 0; i < 5; i++) expect(waiting.tryReserve()).toBe(true); // five requests that never answer
    t = 10_000; // fresh was idle all this time, then takes three requests at once
    for (let i = 0; i < 3; i++) expect(fresh.tryReserve()).toBe(true);
    expect(pool.relieve()).toBe(true);
    expect(closed).toEqual(['waiting']);
    t = 10_500;
    expect(pool.relieve()).toBe(false); // fresh's requests are 500 ms old
    fresh.unreserve(1); // an answer: progress
    t = 11_400;
    expect(pool.relieve()).toBe(false);
  });
});

describe('the node-wide answer bound follows the enclave\'s memory', () => {
  it('a sixth of the memory, within one session\'s budget and 512 MiB', async () => {
    const { answerBoundFor, clientWriteBufferBytesMax, clientAnswerBytesTotalMax } = await import('../enclave/admission.ts');
    const mib = 1024 * 1024;
    expect(answerBoundFor(3072 * mib)).toBe(512 * mib);
    expect(answerBoundFor(1024 * mib)).toBe(Math.floor((1024 * mib) / 6));
    expect(answerBoundFor(128 * mib)).toBe(clientWriteBufferBytesMax);
    expect(answerBoundFor(64 * 1024 * mib)).toBe(512 * mib);
    expect(clientAnswerBytesTotalMax).toBeGreaterThanOrEqual(clientWriteBufferBytesMax);
    expect(clientAnswerBytesTotalMax).toBeLessThanOrEqual(512 * mib);
  });
});
