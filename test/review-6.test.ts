// Review 6 (hostile review of one-way data batches, issue 15): the outbound memory bound and the link's liveness
// probe under a host that stalls connections. F1: batches to a peer whose connection is still opening were queued
// on its promise, unseen by the bound. F2: the all-peers bound counted an unanswered call twice (its bytes and its
// socket's), blocking every small batch. F3: a link stalled right at its bound never got another call, so nothing
// timed out. Each test's comment says what it saw before the fix.
import net from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { PeerPool } from '../enclave/cluster/peers.ts';
import { DataStore, nodeName, outboundBytesMax, peerOutboundBytesMax, probeBytesMax } from '../enclave/cluster/data-store.ts';
import { MemLog } from './helpers/data-net.ts';
import { nodeIdFromPublicKey } from '../enclave/ring/index.ts';
import type { RingDriver } from '../enclave/cluster/ring-driver.ts';

const dir = mkdtempSync(join(tmpdir(), 'r6-'));
const relayPath = join(dir, 'relay.sock');
const sockets: net.Socket[] = [];
let bytesAtRelay = 0;
// The host's outbound relay: accepts, reads everything, never answers (the handshake stalls until its timeout).
const relay = net.createServer((s) => {
  sockets.push(s);
  s.on('data', (d) => (bytesAtRelay += d.length));
  s.on('error', () => undefined);
});
afterAll(() => {
  for (const s of sockets) s.destroy();
  relay.close();
});

function pool(): PeerPool {
  return new PeerPool({
    outboundSocket: relayPath,
    identity: { publicKey: randomBytes(32), sign: () => Buffer.alloc(64) } as never,
    attest: async () => Buffer.alloc(1),
    verifyPeer: async () => { throw new Error('never reached'); },
    ring: { id: randomBytes(32), macKey: randomBytes(32) } as never,
    logger: pino({ level: 'silent' }),
  });
}

describe('R6-F1: the outbound bound while a peer connection is opening', () => {
  it('PeerPool.notify sends nothing on a connection that is not open (nothing is queued for it)', async () => {
    await new Promise<void>((r) => relay.listen(relayPath, r));
    const p = pool();
    const id = 123n;
    const big = randomBytes(250 * 1024);
    let accepted = 0;
    for (let i = 0; i < 200; i++) if (p.notify('peer:1', 'dm', { m: big, n: i }, id)) accepted++;
    await new Promise((r) => setTimeout(r, 100));
    // Before the fix: all 200 (50 MB) accepted and queued on the connection's promise, reported as 0 queued bytes.
    expect(accepted).toBe(0);
    expect(bytesAtRelay).toBe(0);
    p.closeAll();
  });

  it('DataStore.flushTo keeps to peerOutboundBytesMax for a peer whose connection is opening (its batches are counted calls)', async () => {
    const p = pool();
    const peerKey = randomBytes(32);
    const peerId = nodeIdFromPublicKey(peerKey);
    const selfKey = randomBytes(32);
    const self = { id: nodeIdFromPublicKey(selfKey), addr: 'self:0' };
    const ring = { core: { predecessor: null, successors: [], fingers: [] } } as unknown as RingDriver;
    const store = new DataStore({ self, peers: p, ring, log: new MemLog(), founded: false, replicas: 3, minMembers: 3, logger: pino({ level: 'silent' }) });
    const s = store as unknown as { addrs: Map<string, string>; send: (m: unknown) => void };
    const to = nodeName(peerId);
    s.addrs.set(to, 'peer:2');
    const value = 'x'.repeat(200 * 1024);
    const from = { name: nodeName(self.id), ring: self.id, inc: 0 };
    const heap0 = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const turns = 300; // one small (< 256 KiB) batch per event-loop turn, as a busy owner replicating writes sends
    for (let i = 0; i < turns; i++) {
      s.send({ kind: 'peer', to, from, pos: 1, boot: 1, toBoot: 0, toInc: -1, body: { t: 'replicate', shard: 0, epoch: 1, opId: i, op: { key: `k${i}`, entry: { value, version: 1, epoch: 1 }, req: null, open: null } } });
      await new Promise((r) => setImmediate(r));
    }
    const heap1 = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const sentBytes = store.stats.peerBytesOut;
    // Before the fix: 300 batches sent (~59 MiB, all but the probe one-way, queued on the opening connection), none dropped.
    expect(store.stats.peerOneWay).toBe(0);
    expect(sentBytes).toBeLessThanOrEqual(peerOutboundBytesMax + probeBytesMax);
    expect(store.stats.outboundDropped).toBeGreaterThan(0);
    expect(heap1 - heap0).toBeLessThan(2 * peerOutboundBytesMax);
    p.closeAll();
  }, 30_000);
});

describe('R6-F2: the all-peers bound counts an unanswered call still in its socket once', () => {
  it('two ~20 MiB transfers in flight on slow links do not block a 1-message batch to a third peer', async () => {
    // A faithful slow link: what a call or notify writes stays in its socket (writableLength) until drained; calls unanswered.
    const written = new Map<string, number>();
    const add = (a: string, n: number) => written.set(a, (written.get(a) ?? 0) + n);
    const peers = {
      call: (addr: string, _op: string, args: Record<string, unknown>) => { add(addr, (args.m as Uint8Array).length); return new Promise(() => undefined); },
      notify: (addr: string, _op: string, args: Record<string, unknown>) => { add(addr, (args.m as Uint8Array).length); return true; },
      queuedBytes: (addr: string) => written.get(addr) ?? 0,
      queuedBytesTotal: () => [...written.values()].reduce((a, b) => a + b, 0),
    } as unknown as PeerPool;
    const self = { id: nodeIdFromPublicKey(randomBytes(32)), addr: 'self' };
    const ring = { core: { predecessor: null, successors: [], fingers: [] } } as unknown as RingDriver;
    const store = new DataStore({ self, peers, ring, log: new MemLog(), founded: false, replicas: 3, minMembers: 3, logger: pino({ level: 'silent' }) });
    const s = store as unknown as { addrs: Map<string, string>; send: (m: unknown) => void; outboundTotal: number };
    const from = { name: nodeName(self.id), ring: self.id, inc: 0 };
    const names = ['a', 'b', 'c'].map((x) => { const id = nodeIdFromPublicKey(randomBytes(32)); s.addrs.set(nodeName(id), x); return nodeName(id); });
    const value = 'x'.repeat(200 * 1024);
    const msg = (to: string, i: number, v = value) => ({ kind: 'peer', to, from, pos: 1, boot: 1, toBoot: 0, toInc: -1, body: { t: 'replicate', shard: 0, epoch: 1, opId: i, op: { key: `k${i}`, entry: { value: v, version: 1, epoch: 1 }, req: null, open: null } } });
    for (const to of [names[0], names[1]]) {
      for (let i = 0; i < 100; i++) s.send(msg(to as string, i)); // ~20 MiB: one chunked message
      await new Promise((r) => setImmediate(r));
    }
    expect(store.stats.chunksOut).toBeGreaterThan(100);
    expect(store.stats.outboundDropped).toBe(0);
    const real = [...written.values()].reduce((a, b) => a + b, 0);
    // What this node really holds (~40 MiB) is well under the 72 MiB bound, and was enough before (outboundTotal only)...
    expect(real).toBeLessThan(outboundBytesMax * 0.6);
    // ...so a one-message batch (a heartbeat-sized replicate) to the third peer goes (before the fix: dropped).
    s.send(msg(names[2] as string, 1000, 'v'));
    await new Promise((r) => setImmediate(r));
    expect(store.stats.outboundDropped).toBe(0);
  }, 30_000);
});

describe('R6-F3: a link stalled at its outbound bound still gets its liveness probe', () => {
  it('after a probe is answered and the link stalls at the bound, a small batch still goes as a call, which can time out', async () => {
    // The socket of one peer: bytes written stay (writableLength) until the host reads them; calls are answered
    // only when released (the host delivered them and their answer came back).
    let written = 0;
    const held: Array<{ n: number; resolve: (r: unknown) => void }> = [];
    let callsSent = 0;
    const peers = {
      call: (_a: string, _op: string, args: Record<string, unknown>) => {
        const n = (args.m as Uint8Array).length;
        written += n;
        callsSent++;
        return new Promise((resolve) => held.push({ n, resolve }));
      },
      notify: (_a: string, _op: string, args: Record<string, unknown>) => { written += (args.m as Uint8Array).length; return true; },
      queuedBytes: () => written,
      queuedBytesTotal: () => written,
    } as unknown as PeerPool;
    const self = { id: nodeIdFromPublicKey(randomBytes(32)), addr: 'self' };
    const ring = { core: { predecessor: null, successors: [], fingers: [] } } as unknown as RingDriver;
    const store = new DataStore({ self, peers, ring, log: new MemLog(), founded: false, replicas: 3, minMembers: 3, logger: pino({ level: 'silent' }) });
    const s = store as unknown as { addrs: Map<string, string>; send: (m: unknown) => void };
    const from = { name: nodeName(self.id), ring: self.id, inc: 0 };
    const to = nodeName(nodeIdFromPublicKey(randomBytes(32)));
    s.addrs.set(to, 'x');
    const value = 'x'.repeat(200 * 1024);
    let op = 0;
    const batch = async (v = value) => {
      s.send({ kind: 'peer', to, from, pos: 1, boot: 1, toBoot: 0, toInc: -1, body: { t: 'replicate', shard: 0, epoch: 1, opId: op++, op: { key: `k${op}`, entry: { value: v, version: 1, epoch: 1 }, req: null, open: null } } });
      await new Promise((r) => setImmediate(r));
    };
    // A slow link under load: the first batch is the probe (a call); the ones sent while it is out fill the socket to the bound.
    await batch('v'); // a small batch (an ack, a grant) happened to be the probe
    for (let i = 0; i < 200; i++) await batch();
    expect(written).toBeGreaterThan(peerOutboundBytesMax - 256 * 1024);
    // The host delivers exactly the first frame(s) -- the probe -- and its answer, then reads nothing more.
    const first = held.shift() as { n: number; resolve: (r: unknown) => void };
    written -= first.n;
    first.resolve({});
    written = Math.max(written, peerOutboundBytesMax); // and the socket sits right at the bound: not even a small batch fits
    // Time passes (far more than probeEveryMs and peerCallTimeoutMs would need); the core keeps sending.
    const end = Date.now() + 600;
    while (Date.now() < end) {
      await batch();
      await batch('v'); // the small messages a core sends anyway (heartbeats, grants, acknowledgements)
      await new Promise((r) => setTimeout(r, 10));
    }
    // Before the fix every batch since was dropped at the bound check, before the probe was asked for: no call in
    // flight, nothing to time out. Now a small due probe goes past the budget, one at a time.
    expect(held.length).toBe(1);
    expect(callsSent).toBe(2);
    expect(written).toBeLessThanOrEqual(peerOutboundBytesMax + probeBytesMax);
    expect(store.stats.outboundDropped).toBeGreaterThan(0); // the large batches are still dropped
  }, 30_000);
});
