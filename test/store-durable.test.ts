// The data layer's write path (enclave/cluster/store.ts) in process, with a fake ring, a fake
// peer network and a fake sealed log that can fail and recover (issue 11):
// - durable before applied and acknowledged; a node whose log fails answers UNAVAILABLE to
//   everything, then heals by itself, and a write in doubt takes effect once (never twice);
// - a replica acknowledges only what it made durable, also for a retried entry, and refuses
//   (CONFLICT) a write at a version it holds with another value, so the owner does not ack;
// - request ids: a retried put or delete returns its first outcome, also on a new owner;
// - compare-and-set (ifVersion, 0 = only if absent) and deletes of missing keys.
import pino from 'pino';
import { randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it } from 'vitest';
import { RequestTable, type RequestId } from '../enclave/cluster/requests.ts';
import { ClusterStore, type Durability } from '../enclave/cluster/store.ts';
import type { PeerPool } from '../enclave/cluster/peers.ts';
import type { RingDriver } from '../enclave/cluster/ring-driver.ts';
import { Partition } from '../enclave/kv/partition.ts';
import type { LogEntry } from '../enclave/persist.ts';
import { idToBytes, nodeIdFromPublicKey, type NodeRef } from '../enclave/ring/index.ts';
import { EkvError } from '../protocol/errors.ts';

const logger = pino({ level: 'silent' });

/** A sealed log that records what was made durable; `failing` makes record/recover fail like a dead host. */
class FakeLog implements Durability {
  failing = false;
  broken = false;
  readonly durable: LogEntry[] = [];
  snapshots = 0;
  get healthy(): boolean {
    return !this.broken;
  }
  async record(entries: LogEntry[]): Promise<void> {
    await new Promise((r) => setImmediate(r));
    if (this.failing || this.broken) {
      this.broken = true;
      throw new Error('blob store connection closed');
    }
    this.durable.push(...entries);
  }
  async recover(extra: LogEntry[]): Promise<void> {
    if (this.failing) throw new Error('blob store connection closed');
    this.broken = false;
    this.snapshots++;
    this.durable.push(...extra);
  }
  versions(key: string): number[] {
    return this.durable.filter((e) => e.key.toString() === key).map((e) => e.version);
  }
}

interface Node {
  ref: NodeRef;
  store: ClusterStore;
  log: FakeLog;
  partition: Partition;
  requests: RequestTable;
}

/** Nodes by id; `down` ones do not answer. Peer calls go straight to the target's peerOp. */
const nodes = new Map<bigint, Node>();
const down = new Set<bigint>();

function fakePeers(): PeerPool {
  return {
    async call(_addr: string, op: string, req: Record<string, unknown>, _t: number, id: bigint) {
      const n = nodes.get(id);
      if (!n || down.has(id)) throw new EkvError('UNAVAILABLE', 'peer down');
      return n.store.peerOp(op, structuredClone(req), Buffer.alloc(32));
    },
  } as unknown as PeerPool;
}

/** A node whose ring view is `pred` and `succs` (it owns (pred, self]); alone when pred is null. */
function makeNode(id: bigint, pred: NodeRef | null, succs: NodeRef[], replicas: number): Node {
  const ref = { id, addr: `n${id}` };
  const ring = {
    core: { status: 'active', predecessor: pred, successors: succs },
    onEvent() {},
    async lookup() {
      throw new EkvError('UNAVAILABLE', 'no lookups in this test');
    },
  } as unknown as RingDriver;
  const partition = new Partition();
  const requests = new RequestTable();
  const log = new FakeLog();
  const store = new ClusterStore({ partition, ring, peers: fakePeers(), self: ref, replicas, logger, durable: log, requests }, true, true);
  const n = { ref, store, log, partition, requests };
  nodes.set(id, n);
  return n;
}

// Owner A (id 100) with replica B (id 101): A's predecessor is B, so A owns every id but 101.
let a: Node;
let b: Node;
beforeEach(() => {
  nodes.clear();
  down.clear();
  const refA = { id: 100n, addr: 'n100' };
  const refB = { id: 101n, addr: 'n101' };
  a = makeNode(100n, refB, [refB], 2);
  b = makeNode(101n, refA, [refA], 2);
});

const session = randomBytes(16);
let seq = 0;
const newRid = (): RequestId => ({ session, seq: ++seq });
const o = (rid: RequestId | null = null, ifVersion?: number) => ({ principal: null, hops: 0, rid, ...(ifVersion === undefined ? {} : { ifVersion }) });

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof EkvError ? err.code : String(err);
  }
}

const put = (n: Node, key: string, value: string, rid: RequestId | null = newRid(), ifVersion?: number) =>
  n.store.clientOp('put', Buffer.from(key), Buffer.from(value), o(rid, ifVersion));
const del = (n: Node, key: string, rid: RequestId | null = newRid(), ifVersion?: number) =>
  n.store.clientOp('del', Buffer.from(key), null, o(rid, ifVersion));
const get = (n: Node, key: string) => n.store.clientOp('get', Buffer.from(key), null, o());
const held = (n: Node, key: string) => n.partition.get(Buffer.from(key));

describe('durable before acknowledged; fail closed; recover', () => {
  it('acknowledges a write only once it is in the owner\'s log and the replica\'s', async () => {
    expect(await put(a, 'k', 'v1')).toEqual({ n: 1 });
    expect(a.log.versions('k')).toEqual([1]);
    expect(b.log.versions('k')).toEqual([1]);
    expect(held(b, 'k')?.version).toBe(1);
  });

  it('a node whose log fails answers UNAVAILABLE, applies nothing, and heals by itself; the write in doubt applies once', async () => {
    await put(a, 'k', 'v1');
    a.log.failing = true;
    const rid = newRid();
    // The owner retries inside its deadline; cut that short by failing for good while it tries.
    const first = put(a, 'k', 'v2', rid);
    expect(await codeOf(Promise.race([first, new Promise((_, rej) => setTimeout(() => rej(new EkvError('TIMEOUT', 'x')), 300))]))).toBe('TIMEOUT');
    // Not applied on the owner (not durable there), so no read could have returned it.
    expect(held(a, 'k')?.version).toBe(1);
    expect(a.store.durableNow).toBe(false);
    expect(await codeOf(a.store.recoverOnce())).toBe('OK');
    expect(a.store.durableNow).toBe(false); // still failing: recoverOnce reported false
    a.log.failing = false;
    expect(await a.store.recoverOnce()).toBe(true);
    expect(a.store.durableNow).toBe(true);
    // The write in doubt took effect once, and its retry (the SDK's, the forwarding node's) returns it.
    expect(held(a, 'k')).toMatchObject({ version: 2, value: Buffer.from('v2') });
    expect(await first).toEqual({ n: 2 });
    expect(await put(a, 'k', 'v2', rid)).toEqual({ n: 2 });
    expect(held(a, 'k')?.version).toBe(2);
    expect(await put(a, 'k', 'v3')).toEqual({ n: 3 });
  });

  it('a write in doubt is not readable on the owner until every replica holds it (persist failed, replica unreachable)', async () => {
    await put(a, 'k', 'v1');
    await put(a, 'other', 'o1');
    a.store.stop(); // recovery driven by hand
    a.log.failing = true;
    down.add(b.ref.id); // the replica's traffic is dropped
    const rid = newRid();
    const first = put(a, 'k', 'v2', rid);
    first.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    a.store.stop();
    a.log.failing = false; // the disk is back
    expect(await a.store.recoverOnce()).toBe(false); // sealed again, but the write is not on the replica
    // Other keys are served again; the key in doubt is refused, never read at the in-doubt version.
    expect(await get(a, 'other')).toMatchObject({ n: 1 });
    expect(held(a, 'k')?.version).toBe(1);
    const read = get(a, 'k');
    read.catch(() => undefined);
    expect(await Promise.race([read, new Promise((r) => setTimeout(r, 300, 'pending'))])).toBe('pending');
    expect(held(b, 'k')?.version).toBe(1);
    down.delete(b.ref.id); // the replica answers again
    expect(await a.store.recoverOnce()).toBe(true);
    expect(held(b, 'k')).toMatchObject({ version: 2, value: Buffer.from('v2') });
    expect(await read).toMatchObject({ n: 2 });
    expect(await put(a, 'k', 'v2', rid)).toEqual({ n: 2 }); // its retry: the first outcome, once
    expect(await put(a, 'k', 'v3')).toEqual({ n: 3 });
  });

  it('a write that reached no replica is not applied on the owner, and is dropped if a replica holds that version', async () => {
    await put(a, 'k', 'v1');
    down.add(b.ref.id);
    const w = a.store.clientOp('put', Buffer.from('k'), Buffer.from('v2'), { principal: null, hops: 1, rid: newRid() });
    // hops 1: no retry loop; the replicate deadline is long, so stop waiting for it via the replica coming back with another v2
    await new Promise((r) => setTimeout(r, 50));
    a.store.stop();
    await b.store.peerOp('rep', { e: [[Buffer.from('k'), Buffer.from('theirs'), 2]] }, Buffer.alloc(32));
    down.delete(b.ref.id);
    expect(await codeOf(w)).toBe('UNAVAILABLE');
    a.store.stop();
    expect(held(a, 'k')?.version).toBe(1);
    expect(await a.store.recoverOnce()).toBe(true); // the replica refused it: dropped, never applied
    expect(held(a, 'k')?.version).toBe(1);
  });

  it('reads are refused too while the log fails (the node fails closed)', async () => {
    await put(a, 'k', 'v1');
    a.log.broken = true;
    a.log.failing = true;
    const read = get(a, 'k');
    const put2 = put(a, 'k', 'v2');
    a.store.stop(); // no background recovery in this test
    // Neither is answered while the log fails (the node keeps retrying inside its deadline).
    expect(await Promise.race([read, put2, new Promise((r) => setTimeout(r, 300, 'pending'))])).toBe('pending');
    a.log.failing = false;
    await a.store.recoverOnce();
    expect(await read).toMatchObject({ n: 1 });
    expect(await put2).toEqual({ n: 2 });
  });
});

describe('replicas', () => {
  it('a retried entry is acknowledged only once durable on the replica', async () => {
    const entry = [Buffer.from('k'), Buffer.from('v'), 1];
    b.log.failing = true;
    expect(await codeOf(b.store.peerOp('rep', { e: [entry], w: true }, Buffer.alloc(32)))).toBe('UNAVAILABLE');
    expect(await codeOf(b.store.peerOp('rep', { e: [entry], w: true }, Buffer.alloc(32)))).toBe('UNAVAILABLE');
    expect(held(b, 'k')).toBeUndefined();
    b.log.failing = false;
    expect(await b.store.recoverOnce()).toBe(true);
    expect(await codeOf(b.store.peerOp('rep', { e: [entry], w: true }, Buffer.alloc(32)))).toBe('OK');
    expect(b.log.versions('k')).toEqual([1]);
    // Held and durable: the same entry again is OK at once, without another record.
    expect(await codeOf(b.store.peerOp('rep', { e: [entry], w: true }, Buffer.alloc(32)))).toBe('OK');
    expect(b.log.versions('k')).toEqual([1]);
  });

  it('a replica holding another write at that version (or a newer one) answers CONFLICT, and the owner does not acknowledge', async () => {
    await b.store.peerOp('rep', { e: [[Buffer.from('k'), Buffer.from('theirs'), 1]] }, Buffer.alloc(32));
    expect(await codeOf(b.store.peerOp('rep', { e: [[Buffer.from('k'), Buffer.from('mine'), 1]], w: true }, Buffer.alloc(32)))).toBe('CONFLICT');
    await b.store.peerOp('rep', { e: [[Buffer.from('j'), Buffer.from('newer'), 5]] }, Buffer.alloc(32));
    expect(await codeOf(b.store.peerOp('rep', { e: [[Buffer.from('j'), Buffer.from('older'), 4]], w: true }, Buffer.alloc(32)))).toBe('CONFLICT');
    // A sync push (not strict) keeps the replica's copy and does not fail the batch.
    expect(await codeOf(b.store.peerOp('rep', { e: [[Buffer.from('k'), Buffer.from('mine'), 1]] }, Buffer.alloc(32)))).toBe('OK');
    expect(held(b, 'k')?.value?.toString()).toBe('theirs');
    // The owner's write of k at version 1 is refused by the replica: not acknowledged (hops 1: no retry loop here).
    const forwarded = a.store.clientOp('put', Buffer.from('k'), Buffer.from('mine'), { principal: null, hops: 1, rid: newRid() });
    expect(await codeOf(forwarded)).toBe('UNAVAILABLE');
  });
});

describe('exactly-once writes', () => {
  it('a retried put returns its first version and applies once', async () => {
    const rid = newRid();
    expect(await put(a, 'k', 'v1', rid)).toEqual({ n: 1 });
    expect(await put(a, 'k', 'v2')).toEqual({ n: 2 });
    expect(await put(a, 'k', 'v1', rid)).toEqual({ n: 1 });
    expect(held(a, 'k')).toMatchObject({ version: 2, value: Buffer.from('v2') });
  });

  it('a retried delete returns its first outcome (deleted), not "nothing to delete"', async () => {
    await put(a, 'k', 'v1');
    const rid = newRid();
    expect(await del(a, 'k', rid)).toEqual({ n: 2, d: true });
    expect(await del(a, 'k', rid)).toEqual({ n: 2, d: true });
    expect(await del(a, 'k')).toEqual({ n: 0, d: false });
  });

  it('the replica learns the request id with the entry, so a new owner answers the retry', async () => {
    const rid = newRid();
    await put(a, 'k', 'v1', rid);
    // A dies; B takes its range (B's predecessor is now B itself: alone).
    down.add(a.ref.id);
    const lone = makeNode(101n, null, [], 1);
    lone.partition.apply(Buffer.from('k'), held(b, 'k')!);
    for (const [r, w] of b.requests.dump().ids) lone.requests.addStored(r, w);
    expect(await put(lone, 'k', 'v1', rid)).toEqual({ n: 1 });
    expect(held(lone, 'k')?.version).toBe(1);
  });
});

describe('retries the node cannot vouch for', () => {
  it('a write marked as a retry whose id this node does not know is refused EXPIRED, not applied', async () => {
    await put(a, 'k', 'v1');
    // As after a pull, a rollback or a wipe: the first attempt may have landed where this node cannot see it.
    expect(await codeOf(put(a, 'k', 'v2', { ...newRid(), retry: true }))).toBe('EXPIRED');
    expect(held(a, 'k')?.version).toBe(1);
    expect(held(b, 'k')?.version).toBe(1);
    // Known ids are still answered with their first outcome, retry or not.
    const rid = newRid();
    expect(await put(a, 'k', 'v2', rid)).toEqual({ n: 2 });
    expect(await put(a, 'k', 'v2', { ...rid, retry: true })).toEqual({ n: 2 });
    expect(held(a, 'k')?.version).toBe(2);
  });

  it('the forwarding node marks its own re-sends as retries once an attempt may have reached the owner', async () => {
    // A forwards to owner B, which does not answer (its first attempt may have landed); when B answers
    // again it does not know the id (as after a wipe or a rollback), so A's re-send, marked, is EXPIRED.
    const calls: unknown[] = [];
    type Inner = { c: { ring: { core: { predecessor: NodeRef | null }; lookup: unknown } } };
    const ring = (a.store as unknown as Inner).c.ring;
    ring.core.predecessor = { id: 99n, addr: 'n99' }; // A owns (99, 100]: not k
    ring.lookup = async () => ({ owner: b.ref });
    (b.store as unknown as Inner).c.ring.core.predecessor = b.ref; // B owns everything
    down.add(b.ref.id);
    const w = a.store.clientOp('put', Buffer.from('k'), Buffer.from('v'), { principal: null, hops: 0, rid: newRid() });
    const peers = (a.store as unknown as { c: { peers: { call: (...x: unknown[]) => Promise<unknown> } } }).c.peers;
    const call = peers.call.bind(peers);
    peers.call = async (...x: unknown[]) => {
      calls.push((x[2] as { r?: unknown[] }).r);
      if (calls.length === 3) down.delete(b.ref.id);
      return call(...x);
    };
    expect(await codeOf(w)).toBe('EXPIRED'); // B does not know the id: not applied on a retry
    expect(held(b, 'k')).toBeUndefined();
    expect((calls[0] as unknown[]).length).toBe(2);
    expect((calls[1] as unknown[])[2]).toBe(true);
  });

  it('request-table rows travel with a pull (and a push), so the new holder answers the retry', async () => {
    const rid = newRid();
    expect(await put(a, 'k', 'v1', rid)).toEqual({ n: 1 });
    const peerKey = Buffer.alloc(32, 7);
    const end = nodeIdFromPublicKey(peerKey);
    const answer = (await a.store.peerOp('pull', { s: idToBytes(end), addr: 'n9' }, peerKey)) as { e: unknown[]; q: unknown[] };
    expect(answer.e.length).toBe(1);
    expect(answer.q.length).toBe(1);
    // A node that joins (empty table) takes the pulled entries with their rows, as pullFrom does.
    const c = makeNode(9n, null, [], 1);
    await c.store.peerOp('rep', { e: answer.e, q: answer.q }, Buffer.alloc(32));
    expect(c.requests.size).toBe(1);
    expect(await put(c, 'k', 'v1', { ...rid, retry: true })).toEqual({ n: 1 });
    expect(held(c, 'k')?.version).toBe(1);
    // Rows are validated and bounded, and only those of the batch's keys are taken.
    expect(await codeOf(c.store.peerOp('rep', { e: answer.e, q: [['x']] }, Buffer.alloc(32)))).toBe('BAD_REQUEST');
    expect(await codeOf(c.store.peerOp('rep', { e: answer.e, q: new Array(4097).fill(answer.q[0]) }, Buffer.alloc(32)))).toBe('BAD_REQUEST');
    const d = makeNode(10n, null, [], 1);
    await d.store.peerOp('rep', { e: [[Buffer.from('j'), Buffer.from('x'), 1]], q: answer.q }, Buffer.alloc(32));
    expect(d.requests.size).toBe(0);
  });
});

describe('compare-and-set', () => {
  it('put and delete with ifVersion (0 = only if absent); CONFLICT carries the current version', async () => {
    expect(await put(a, 'k', 'v1', newRid(), 0)).toEqual({ n: 1 });
    const lost = await put(a, 'k', 'v2', newRid(), 0).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(EkvError);
    expect(lost).toMatchObject({ code: 'CONFLICT', version: 1 });
    expect(await put(a, 'k', 'v2', newRid(), 1)).toEqual({ n: 2 });
    expect(await del(a, 'k', newRid(), 1).catch((e: EkvError) => [e.code, e.version])).toEqual(['CONFLICT', 2]);
    expect(await del(a, 'k', newRid(), 2)).toEqual({ n: 3, d: true });
    // Absent (a tombstone) counts as version 0; the next write continues the version sequence.
    expect(await put(a, 'k', 'v4', newRid(), 0)).toEqual({ n: 4 });
    expect(held(a, 'k')?.value?.toString()).toBe('v4');
  });
});
