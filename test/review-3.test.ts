// Third hostile review of the data path (branch `review`): the host (every byte and its timing) and an
// authenticated but malicious client (its own keys, its own rights). Each test reproduces one finding of
// /work/wt/brief/REPORT-review.md and asserts the safe behaviour, so it fails on main at 976df1f (before the
// fixes) and passes with them. Harness: test/helpers/data-net.ts (three DataStores over the op catalogue).
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { EkvClient } from '../client/index.ts';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { EkvError } from '../protocol/errors.ts';
import { RpcClient, serveRpc } from '../protocol/rpc.ts';
import { type ClientResult, shardOf } from '../enclave/data/index.ts';
import { retryable, toEkvError } from '../enclave/cluster/data-store.ts';
import { opensQueuedPerPrincipal, queuedPerPrincipalMax, waitersPerWriteMax } from '../enclave/data/node.ts';
import { principalTag } from '../enclave/cluster/op-wire.ts';
import { DataNet, fast, type NetNode } from './helpers/data-net.ts';
import { stepModel } from './helpers/linearizability.ts';

let net: DataNet | null = null;
afterEach(() => {
  net?.stop();
  net = null;
});

async function rejection(p: Promise<unknown>): Promise<EkvError | null> {
  try {
    await p;
    return null;
  } catch (err) {
    if (err instanceof EkvError) return err;
    throw err;
  }
}

describe('R7: a principal cannot evict sessions other callers are using', () => {
  it('R7a: fresh keys (free to make) filling the range\'s session table do not push out a session whose write is in flight', async () => {
    net = new DataNet();
    // A small table (4 sessions, 2 per principal) so that a few fresh keys fill it; the enclave's sessionIdleTicks (30 s).
    await net.start(3, { ...fast, sessionsMax: 4, sessionsPerPrincipalMax: 2 });
    await net.formed();
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    const entry = net.nodes.find((x) => x !== owner) as NetNode;
    const victim = randomBytes(32);
    const s = (await net.call(entry, 'open', { k: key }, victim)).s as number;
    // The victim's write is forwarded to the owner and applied; the host loses the forward's answer for a while.
    let release!: () => void;
    net.loseAnswer = { op: 'fwd', gate: new Promise<void>((r) => (release = r)) };
    const first = net.call(entry, 'put', { k: key, v: Buffer.from('mine'), iv: 0, s: [s, 1, 1] }, victim);
    await net.until('the put to be applied at the owner', 10_000, () => {
      try {
        return owner.store.readOwned(key)?.toString() === 'mine';
      } catch {
        return false; // its lease lapsed for a moment (a loaded machine)
      }
    });
    // Mallory makes keys (each a new principal) and opens sessions on the range with keys of her own.
    const mine = net.sameShard(key, 'mallory');
    const refused: string[] = [];
    for (let i = 0; i < 6; i++) {
      const err = await rejection(net.call(owner, 'open', { k: mine }, randomBytes(32)));
      if (err) refused.push(err.code);
    }
    release(); // the entry node retries the same (session, seq) ...
    // ... and gets the first answer: the session was not evicted (on main: EXPIRED, OUTCOME_UNKNOWN). (On a loaded
    // machine the entry node's 8 s may run out while the answer is held: then the SDK's retry, the same request.)
    let got = await first.catch((err: unknown) => err);
    if (got instanceof EkvError && got.code === 'UNAVAILABLE') got = await net.call(entry, 'put', { k: key, v: Buffer.from('mine'), iv: 0, s: [s, 1, 1] }, victim);
    expect(got).toEqual({ n: 1 });
    // Past the table's room, Mallory's opens are refused (UNAVAILABLE: nothing changed), not served by eviction.
    expect(refused.length).toBeGreaterThan(0);
    expect(new Set(refused)).toEqual(new Set(['UNAVAILABLE']));
    // The victim's session keeps working.
    expect(await net.call(owner, 'put', { k: key, v: Buffer.from('mine2'), s: [s, 2, 2] }, victim)).toEqual({ n: 2 });
  }, 30_000);

  // FINDING R7b (low, not fixed by choice): callers without a key share the `anon` tag and its bound of 32 sessions
  // per range, so one anonymous caller's opens evict other anonymous callers' sessions, in use or not (a write in
  // flight then comes back EXPIRED, outcome unknown). Refusing such opens (as for other principals' sessions) turned
  // away the 33rd anonymous CLI process writing to one range within 30 s; anonymous callers (open access) can
  // overwrite and delete each other's keys anyway. Use keys.
  it.skip('R7b: an anonymous caller cannot evict other anonymous callers\' sessions in use (they share one principal tag)', async () => {
    net = new DataNet();
    await net.start(3, { ...fast, sessionsMax: 8, sessionsPerPrincipalMax: 2 });
    await net.formed();
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    // An anonymous victim writes in its session.
    const s = (await net.call(owner, 'open', { k: key })).s as number;
    expect(await net.call(owner, 'put', { k: key, v: Buffer.from('v1'), s: [s, 1, 1] })).toEqual({ n: 1 });
    // An anonymous attacker opens sessions (the anonymous bound is 2 here).
    const errs: Array<EkvError | null> = [];
    for (let i = 0; i < 3; i++) errs.push(await rejection(net.call(owner, 'open', { k: key })));
    expect(errs.filter((e) => e !== null).map((e) => e?.code)).toEqual(['UNAVAILABLE', 'UNAVAILABLE']);
    // On main the victim's session was evicted: EXPIRED.
    expect(await net.call(owner, 'put', { k: key, v: Buffer.from('v2'), s: [s, 2, 2] })).toEqual({ n: 2 });
  }, 30_000);

  it('R7c: the bound still holds: sessions not used for sessionIdleTicks are evicted (fairly: the principal with the most first)', async () => {
    net = new DataNet();
    await net.start(3, { ...fast, sessionsMax: 4, sessionsPerPrincipalMax: 3, sessionIdleTicks: 300 });
    await net.formed();
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    const alice = randomBytes(32);
    const bob = randomBytes(32);
    const a = (await net.call(owner, 'open', { k: key }, alice)).s as number;
    const b: number[] = [];
    for (let i = 0; i < 3; i++) b.push((await net.call(owner, 'open', { k: key }, bob)).s as number);
    // The table (4) is full of busy sessions: a newcomer is refused.
    const carol = randomBytes(32);
    expect((await rejection(net.call(owner, 'open', { k: key }, carol)))?.code).toBe('UNAVAILABLE');
    await new Promise((r) => setTimeout(r, 3500)); // every session idle (3 s: long enough that the opens above stay busy under load)
    const c = (await net.call(owner, 'open', { k: key }, carol)).s as number;
    expect(c).toBeGreaterThan(0);
    // Bob held the most: his least recently used session went, Alice's stayed.
    expect(await net.call(owner, 'put', { k: key, v: Buffer.from('a'), s: [a, 1, 1] }, alice)).toEqual({ n: 1 });
    expect((await rejection(net.call(owner, 'put', { k: key, v: Buffer.from('b'), s: [b[0] as number, 1, 1] }, bob)))?.message).toMatch(/^SESSION_EXPIRED/);
    const snap = owner.store.durableRecords().find((r) => r.t === 'snap' && r.shard === shardOf('apple', 4));
    expect(snap && snap.t === 'snap' ? snap.sessions.table.size : -1).toBeLessThanOrEqual(4);
  }, 30_000);
});

describe('R7 (the fix\'s own risk): a table kept busy by callers does not block the enclave\'s access documents', () => {
  it('R7d: with every session busy, the document owner still opens its session (evicting a caller\'s) and stores an ACL change', async () => {
    net = new DataNet();
    await net.start(3, { ...fast, sessionsMax: 4, sessionsPerPrincipalMax: 1 });
    await net.formed();
    const doc = Buffer.from([0, 0x61, 0x63, 0x6c]); // a reserved key (an ACL document's)
    const owner = net.ownerOf(doc.toString('latin1'));
    const mine = net.sameShard(doc, 'mallory');
    for (let i = 0; i < 4; i++) await net.call(owner, 'open', { k: mine }, randomBytes(32));
    expect((await rejection(net.call(owner, 'open', { k: mine }, randomBytes(32))))?.code).toBe('UNAVAILABLE');
    await net.until('the owner to hold its read lease (slow under load)', 10_000, () => owner.store.owns(doc));
    await owner.store.putOwned(doc, Buffer.from('acl v2: mallory revoked'));
    expect(owner.store.readOwned(doc)?.toString()).toBe('acl v2: mallory revoked');
  }, 30_000);
});

describe('R8: one caller\'s flood of opens does not take a range\'s queue from everyone else', () => {
  it('opens queued at an owner are bounded per principal; another caller\'s write in the range is not refused', async () => {
    net = new DataNet();
    await net.start(3, { ...fast, queuedMax: 64 });
    await net.formed();
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    const victim = randomBytes(32);
    const s = (await net.call(owner, 'open', { k: key }, victim)).s as number;
    const shard = shardOf('apple', 4);
    const mallory = principalTag(randomBytes(32));
    // Mallory fires 200 opens at once (one connection may hold 4,096 requests in flight), then the victim writes.
    const flood = Array.from({ length: 200 }, () => owner.store.local({ kind: 'open', shard, principal: mallory }));
    const put = owner.store.local({ kind: 'put', key: 'apple', value: 'v1', ifVersion: null, session: s, seq: 1, floor: 1, principal: principalTag(victim) });
    const results = await Promise.all(flood);
    // On main: 64 opens queued and the victim's write refused UNAVAILABLE (queue full).
    expect(await put).toMatchObject({ ok: true, version: 1 });
    expect(results.filter((r) => r.ok).length).toBeLessThanOrEqual(opensQueuedPerPrincipal + 1);
  }, 30_000);
});

describe('R11: the host stalling a write while a client re-sends it does not grow the owner\'s memory without bound', () => {
  it('callers waiting for one write in flight are bounded (the oldest is answered UNAVAILABLE)', async () => {
    net = new DataNet();
    await net.start(3);
    await net.formed();
    const key = 'stall';
    const n0 = net.ownerOf(key);
    const n1 = net.nodes.find((x) => x !== n0) as NetNode;
    const tag = principalTag(null);
    const o = await n0.store.local({ kind: 'open', shard: shardOf(key, 4), principal: tag });
    const s = o.ok && o.kind === 'open' ? o.session : 0;
    // The host holds the owner's data messages to n1: n1 never acknowledges and the write stays in flight (3 nodes, R = 3: no spare).
    net.holdSender = n0.ref.addr;
    net.hold.add(n1.ref.addr);
    const put = { kind: 'put' as const, key, value: 'v', ifVersion: null, session: s, seq: 1, floor: 1, principal: tag };
    const answers: Array<Promise<unknown>> = [];
    for (let i = 0; i < 3000; i++) answers.push(n0.store.local(put));
    const range = (n0.store.driver.node as unknown as { ranges: Array<{ inflight: Map<string, { replies: unknown[] }> }> }).ranges[shardOf(key, 4)];
    const waiting = range?.inflight.get(key)?.replies.length ?? -1;
    // On main: 3,000 (one per re-send, for as long as the host holds the write; 25 per SDK request from its entry node's retries).
    expect(waiting).toBeGreaterThan(0);
    expect(waiting).toBeLessThanOrEqual(waitersPerWriteMax);
    for (const r of net.held.splice(0)) r();
    net.hold.clear();
    await Promise.all(answers);
  }, 30_000);
});

describe('R6: a CONFLICT or a delete saying "no value" is checked against the client floor', () => {
  it('the owner says which delete left the key without a value (t / absentAt): CONFLICT and a delete of an absent key', async () => {
    net = new DataNet();
    await net.start(3);
    await net.formed();
    const key = Buffer.from('apple');
    const [a, b] = net.nodes as [NetNode, NetNode];
    const s = (await net.call(a, 'open', { k: key })).s as number;
    expect(await net.call(a, 'put', { k: key, v: Buffer.from('v1'), s: [s, 1, 1] })).toEqual({ n: 1 });
    expect(await net.call(b, 'del', { k: key, s: [s, 2, 2] })).toEqual({ n: 2, d: true });
    const err = await rejection(net.call(b, 'put', { k: key, v: Buffer.from('x'), iv: 1, s: [s, 3, 3] }));
    expect(err).toMatchObject({ code: 'CONFLICT', version: 0, absentAt: 2 });
    // A retry of the CONFLICT through another node (remembered, replicated) says the same.
    expect(await rejection(net.call(a, 'put', { k: key, v: Buffer.from('x'), iv: 1, s: [s, 3, 3] }))).toMatchObject({ code: 'CONFLICT', absentAt: 2 });
    expect(await net.call(a, 'del', { k: key, s: [s, 4, 4] })).toEqual({ n: 0, d: false, t: 2 });
    // A key never written: 0.
    const other = net.sameShard(key, 'never');
    expect(await rejection(net.call(a, 'put', { k: other, v: Buffer.from('x'), iv: 7, s: [s, 5, 5] }))).toMatchObject({ code: 'CONFLICT', version: 0, absentAt: 0 });
  }, 30_000);

  it('the RPC layer carries a refusal\'s `t` as EkvError.absentAt (and nothing else claims it)', async () => {
    // Two in-memory ends of a session (every message through CBOR, as on the wire).
    type End = { onMsg: (m: unknown) => void; peer: End | null };
    const mk = (): End & { start: (m: (x: unknown) => void, c: (e: EkvError) => void) => void; send: (x: unknown) => void; close: () => void } => {
      const e = {
        onMsg: (_m: unknown) => undefined as void, peer: null as End | null,
        start(m: (x: unknown) => void) { e.onMsg = m; },
        send(x: unknown) { const to = e.peer; if (to) setImmediate(() => to.onMsg(decodeCbor(encodeCbor(x)))); },
        close() {},
      };
      return e;
    };
    const a = mk();
    const b = mk();
    a.peer = b;
    b.peer = a;
    serveRpc(b as never, (op) => {
      if (op === 'cas') throw new EkvError('CONFLICT', 'no value', { version: 0, absentAt: 4 });
      throw new EkvError('CONFLICT', 'the key is at 2', { version: 2 });
    }, () => undefined);
    const rpc = new RpcClient(a as never);
    expect(await rejection(rpc.call('cas', {}, 1000))).toMatchObject({ code: 'CONFLICT', version: 0, absentAt: 4 });
    expect(await rejection(rpc.call('other', {}, 1000))).toMatchObject({ code: 'CONFLICT', version: 2, absentAt: undefined });
    rpc.close();
  });

  it('the simulator\'s checker holds a CONFLICT\'s `t` to the model (a wrong delete version is not linearizable)', () => {
    const absentAt2 = { exists: false, value: null, version: 2 };
    const cas = { kind: 'put' as const, value: 'x', ifVersion: 1 };
    expect(stepModel(absentAt2, cas, { kind: 'conflict', version: 0, t: 2 })).toEqual(absentAt2);
    expect(stepModel(absentAt2, cas, { kind: 'conflict', version: 0, t: 1 })).toBeNull();
    expect(stepModel(absentAt2, cas, { kind: 'conflict', version: 0 })).toEqual(absentAt2); // a node that does not say
    // (With the core's t off by one, `npm run sim:faults -- --seeds 10 --from 9001` failed 10 of 10 seeds.)
  });

  const ringA = 'a'.repeat(64);
  type Routed = (key: Buffer, op: string, args: Record<string, unknown>, via: { conn?: unknown }) => Promise<Record<string, unknown>>;
  function scripted(answer: (op: string, args: Record<string, unknown>) => Record<string, unknown>): EkvClient {
    const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: '00'.repeat(48) } }, { timeoutMs: 1000 });
    (kv as unknown as { callRouted: Routed }).callRouted = async (_key, op, args, via) => {
      if (op === 'open') return { s: 1, sh: 0, S: 1, w: 64 };
      (via ?? {}).conn = { ringId: Buffer.from(ringA, 'hex') };
      return answer(op, args);
    };
    return kv;
  }

  it('a rolled-back node answering CONFLICT "no value" (never written) to a client that saw v3 is STALE; a later delete is not', async () => {
    let conflictAt = 0;
    const kv = scripted((op) => {
      if (op === 'put') return { n: 3 };
      throw new Error(op);
    });
    await kv.put('k', 'v3');
    (kv as unknown as { callRouted: Routed }).callRouted = async (_key, op, _args, via) => {
      if (op === 'open') return { s: 1, sh: 0, S: 1, w: 64 };
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      throw new EkvError('CONFLICT', 'no value', { version: 0, absentAt: conflictAt });
    };
    // Rolled back to before the key existed (on main: CONFLICT, "the key has no value", accepted).
    await expect(kv.put('k', 'x', { ifVersion: 3 })).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
    // "Deleted at 3", where this client saw a value: another history.
    conflictAt = 3;
    await expect(kv.put('k', 'x', { ifVersion: 3 })).rejects.toMatchObject({ code: 'STALE', reason: 'FORKED_VALUE' });
    // Deleted at 4 by someone else: a genuine CONFLICT.
    conflictAt = 4;
    await expect(kv.put('k', 'x', { ifVersion: 3 })).rejects.toMatchObject({ code: 'CONFLICT', version: 0 });
  });

  it('a rolled-back node answering a delete with "nothing to delete" (never written) to a client that saw v3 is STALE', async () => {
    let t = 0;
    const kv = scripted((op) => {
      if (op === 'put') return { n: 3 };
      if (op === 'del') return { n: 0, d: false, t };
      throw new Error(op);
    });
    await kv.put('k', 'v3');
    // On main: { deleted: false, version: 0 } returned.
    await expect(kv.delete('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
    t = 5; // deleted at 5 by someone else: fine, and the floor now says "no value at 5"
    expect(await kv.delete('k')).toEqual({ deleted: false, version: 0 });
    t = 4;
    await expect(kv.delete('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
  });
});

describe('findings not fixed (FINDING: each test asserts the safe behaviour and fails today)', () => {
  // FINDING R9 (medium, availability): a range's 16 MiB (`rangeBytesMax`) is shared by every principal with no
  // per-principal quota, and principals are free (a fresh key creates a namespace and picks keys of its own that
  // hash into any range). One caller fills a range and every other caller's put there is refused
  // VALUE_TOO_LARGE / RANGE_FULL (not applied) until the filler deletes. An ACL revocation still works (a
  // replacement that does not grow passes the check), a grant that grows the document does not. The fix needs
  // per-principal (or per-namespace) accounting in the replicated range state.
  it.skip('R9: one caller filling a range does not refuse another caller\'s put there', async () => {
    net = new DataNet();
    await net.start(3, { ...fast, rangeBytesMax: 8192 });
    await net.formed();
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    const mallory = randomBytes(32);
    const ms = (await net.call(owner, 'open', { k: key }, mallory)).s as number;
    for (let i = 1; ; i++) {
      const err = await rejection(net.call(owner, 'put', { k: net.sameShard(key, `m${i}`), v: Buffer.alloc(1000), s: [ms, i, i] }, mallory));
      if (err) break;
    }
    const victim = randomBytes(32);
    const vs = (await net.call(owner, 'open', { k: key }, victim)).s as number;
    expect(await net.call(owner, 'put', { k: key, v: Buffer.alloc(1000), s: [vs, 1, 1] }, victim)).toEqual({ n: 1 });
  }, 30_000);

  // FINDING R10 (low-medium, availability; fixed): the owner's write queue (`queuedMax`, 4,096 per range) was
  // shared. One principal could hold 32 sessions × 64 window = 2,048 queued writes on one key (each waits for the
  // one before it: a replication round), so two fresh keys filled the queue and other callers' writes in the range
  // were refused UNAVAILABLE for as long as the queue drained. Now each principal tag may have at most
  // queuedMax / queuedPrincipalShare (here 256 / 8 = 32) requests waiting in a range; past it, BUSY before it is
  // queued (not applied; retried like UNAVAILABLE: the SDK sees UNAVAILABLE with reason BUSY).
  it('R10: two principals queueing writes on one key do not refuse a third caller\'s write in the range', async () => {
    net = new DataNet();
    await net.start(3, { ...fast, queuedMax: 256, sessionsPerPrincipalMax: 4, windowMax: 64 });
    await net.formed();
    const owner = net.ownerOf('apple');
    const shard = shardOf('apple', 4);
    const victim = principalTag(randomBytes(32));
    const o = await owner.store.local({ kind: 'open', shard, principal: victim });
    const s = o.ok && o.kind === 'open' ? o.session : 0;
    const flood: Array<Promise<unknown>> = [];
    for (let p = 0; p < 2; p++) {
      const tag = principalTag(randomBytes(32));
      for (let x = 0; x < 4; x++) {
        const ox = await owner.store.local({ kind: 'open', shard, principal: tag });
        const sx = ox.ok && ox.kind === 'open' ? ox.session : 0;
        for (let q = 1; q <= 40; q++) flood.push(owner.store.local({ kind: 'put', key: 'apple', value: `${q}`, ifVersion: null, session: sx, seq: q, floor: 1, principal: tag }));
      }
    }
    const other = net.sameShard(Buffer.from('apple'), 'victim').toString('latin1');
    const mine = owner.store.local({ kind: 'put', key: other, value: 'v', ifVersion: null, session: s, seq: 1, floor: 1, principal: victim });
    expect(await mine).toMatchObject({ ok: true });
    const results = (await Promise.all(flood)) as ClientResult[];
    // Each flooder had at most its share (queuedPerPrincipalMax: 32) waiting: the rest were refused BUSY.
    expect(queuedPerPrincipalMax({ queuedMax: 256 })).toBe(32);
    expect(results.filter((r) => !r.ok && r.code === 'BUSY').length).toBeGreaterThan(0);
    // (Opens count in the share too: a flooder's later opens are refused BUSY, and its writes on them BAD_REQUEST.)
    // To the SDK: UNAVAILABLE (retried with the same request id), the reason saying why.
    expect(toEkvError({ ok: false, code: 'BUSY' })).toMatchObject({ code: 'UNAVAILABLE', reason: 'BUSY' });
    expect(retryable('BUSY')).toBe(true);
  }, 30_000);
});
