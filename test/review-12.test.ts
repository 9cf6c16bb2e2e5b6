// Hostile review 12 (the data driver, the sealed log's Persistence, and how data-store drives them).
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DataStore } from '../enclave/cluster/data-store.ts';
import { decodeScan, scanAccessOf, scanHere } from '../enclave/cluster/scan-ops.ts';
import type { PeerPool } from '../enclave/cluster/peers.ts';
import type { RingDriver } from '../enclave/cluster/ring-driver.ts';
import { type DataLog, type LogRecord, shardOf } from '../enclave/data/index.ts';
import { nodeIdFromPublicKey } from '../enclave/ring/index.ts';
import { fast } from './helpers/data-net.ts';

/** A log whose appends can be held (the host's disk is slow): nothing appended while held is durable. */
class HeldLog implements DataLog {
  records: LogRecord[] = [];
  hold = false;
  readonly held: Array<() => void> = [];
  append(rs: readonly LogRecord[]): Promise<void> {
    const land = (): void => void this.records.push(...rs);
    if (!this.hold) return Promise.resolve().then(land);
    return new Promise<void>((resolve) => this.held.push(() => (land(), resolve())));
  }
  async load(): Promise<LogRecord[]> {
    return [...this.records];
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let stores: DataStore[] = [];
afterEach(() => {
  for (const s of stores) s.stop();
  stores = [];
});

async function singleNode(): Promise<{ store: DataStore; log: HeldLog }> {
  const key = Buffer.alloc(32, 7);
  const self = { id: nodeIdFromPublicKey(key), addr: 'n0' };
  const peers = { call: async () => { throw new Error('no peers'); }, notify: () => false, queuedBytes: () => 0, queuedBytesTotal: () => 0 } as unknown as PeerPool;
  const ring = { core: { predecessor: null, successors: [], fingers: [] } } as unknown as RingDriver;
  const log = new HeldLog();
  // A single-node image: R = 1, writes need one member (enclave/enclave.ts minMembers).
  const store = new DataStore({ self, peers, ring, log, founded: true, replicas: 1, minMembers: 1, config: { ...fast, replicas: 1 }, logger: pino({ level: 'silent' }) });
  stores.push(store);
  await store.start();
  const deadline = Date.now() + 10_000;
  while (!store.ready && Date.now() < deadline) await sleep(10);
  expect(store.ready).toBe(true);
  return { store, log };
}

describe('review-12 F1: reads outside the driver (scans, the access documents) show writes not yet durable', () => {
  it('a scan of a single-member range does not list a put whose record is not durable yet', async () => {
    const { store, log } = await singleNode();
    const key = 'apple';
    const shard = shardOf(key, fast.shards as number);
    const o = await store.local({ kind: 'open', shard, principal: 'p' });
    if (!o.ok || o.kind !== 'open') throw new Error('no session');
    log.hold = true; // the host delays the disk write from here on
    const put = store.local({ kind: 'put', key, value: 'new', ifVersion: null, session: o.session, seq: 1, floor: 1, principal: 'p' });
    await sleep(20);
    expect(log.held.length).toBeGreaterThan(0);
    // The put's answer is held (persist-then-send): its record may still be lost by a crash.
    const q = decodeScan({ sh: shard, l: 10, v: true }, fast.shards as number);
    const scanned = scanHere(store, scanAccessOf({ check: () => undefined }), q, null);
    const first = await Promise.race([scanned, sleep(50).then(() => 'waiting' as const)]);
    // Either the scan waits for the record, or it lists the acknowledged state (no 'apple').
    if (first !== 'waiting') expect(first.ok && first.entries.some((e) => e.key === key)).toBe(false);
    log.hold = false;
    for (const f of log.held.splice(0)) f();
    expect(await put).toMatchObject({ ok: true, kind: 'write', version: 1 });
    const after = await scanned;
    if (first === 'waiting') expect(after).toMatchObject({ ok: true, entries: [{ key, value: 'new', version: 1 }] });
  }, 20_000);

  it('the access module\'s document read (readOwned) does not return a put whose record is not durable yet', async () => {
    const { store, log } = await singleNode();
    const key = Buffer.from('\0acl/ns/docs', 'latin1'); // a reserved key: only the enclave's DocOwner writes it (putOwned)
    await store.putOwned(key, Buffer.from('old')); // the enclave's session of the range is open
    log.hold = true;
    const put = store.putOwned(key, Buffer.from('new'));
    await sleep(50);
    expect(log.held.length).toBeGreaterThan(0);
    // The acknowledged value, or UNAVAILABLE: never the value a crash could still lose.
    const doc = (() => { try { return store.readOwned(key)?.toString('latin1') ?? null; } catch { return 'unavailable'; } })();
    expect(doc === 'old' || doc === 'unavailable').toBe(true);
    log.hold = false;
    for (const f of log.held.splice(0)) f();
    await put;
    expect(store.readOwned(key)?.toString('latin1')).toBe('new');
  }, 20_000);

  it('readOwned is not held back by writes to other keys of the document\'s range', async () => {
    const { store, log } = await singleNode();
    const key = Buffer.from('\0acl/ns/docs', 'latin1');
    await store.putOwned(key, Buffer.from('v1'));
    const shard = shardOf(key.toString('latin1'), fast.shards as number);
    let other = '';
    for (let i = 0; other === ''; i++) if (shardOf(`k${i}`, fast.shards as number) === shard) other = `k${i}`;
    const o = await store.local({ kind: 'open', shard, principal: 'p' });
    if (!o.ok || o.kind !== 'open') throw new Error('no session');
    log.hold = true; // a client's write to the same range waits for the disk
    const put = store.local({ kind: 'put', key: other, value: 'x', ifVersion: null, session: o.session, seq: 1, floor: 1, principal: 'p' });
    await sleep(20);
    expect(log.held.length).toBeGreaterThan(0);
    expect(store.readOwned(key)?.toString('latin1')).toBe('v1');
    log.hold = false;
    for (const f of log.held.splice(0)) f();
    expect(await put).toMatchObject({ ok: true });
  }, 20_000);
});

// F2: one turn's records (or two pipelined turns) that cross a segment cut (T6) go out as two append requests at
// once: to the old segment, and one creating the next. An honest host that fails the first (an I/O error on that
// file: it poisons and cuts back only that file, host/blob-store.ts) still serves the second: the new segment holds
// records after a hole. None of them was acknowledged (answers resolve in order), but a crash before the resync
// leaves a log that recovery refuses as tampering (SEAL_GAP), and Persistence.open then discards the whole sealed
// state (every acknowledged write of a single-node ring).
describe('review-12 F2: a failed append to one segment while the next segment is created', () => {
  it('an I/O error on the old segment never leaves a newer segment after a hole', async () => {
    const { randomBytes } = await import('node:crypto');
    const { SealedStore } = await import('../enclave/seal/log.ts');
    const { SealError } = await import('../enclave/seal/errors.ts');
    const { FakeBlobs } = await import('./helpers/fake-blobs.ts');
    class PerFileFault extends FakeBlobs {
      failName: string | null = null;
      override async append(name: string, bytes: Uint8Array, create: boolean): Promise<void> {
        if (name === this.failName && !create) {
          this.appends++;
          throw new SealError('SEAL_IO', 'blob store: storage error'); // that file only (poisoned, cut back)
        }
        return super.append(name, bytes, create);
      }
    }
    const blobs = new PerFileFault();
    const dataKey = randomBytes(32);
    const nodeId = randomBytes(32);
    const { store } = await SealedStore.open({ blobs, dataKey, nodeId });
    await store.append(Buffer.from('first'));
    const [first] = await blobs.list('wal-');
    blobs.failName = first as string;
    // Nine records of ~1 MB in one turn: they cross the 8 MiB cut, so part goes to `first`, the rest to a new one.
    const big = Array.from({ length: 9 }, (_, i) => store.append(Buffer.alloc(1_000_000, i)).then(() => 'ok', (e: unknown) => (e as Error).message));
    const results = await Promise.all(big);
    expect(results.every((r) => r !== 'ok')).toBe(true); // nothing of the turn acknowledged
    expect(store.healthy).toBe(false);
    // The enclave is restarted before it resealed (D4's resync): the host's disk as it is now.
    const reopened = await SealedStore.open({ blobs, dataKey, nodeId }).then(
      (r) => ({ ok: true as const, records: r.recovered.records.map((x) => Buffer.from(x).toString('latin1')) }),
      (e: unknown) => ({ ok: false as const, code: (e as { code?: string }).code }),
    );
    expect(reopened).toEqual({ ok: true, records: ['first'] });
  }, 30_000);
});

// Held up: a hand-driven log (appends resolve or fail in any order). The failed batch's answer, a later batch's
// answer that resolved first, and a get depending on either never leave; the resealed state holds both writes.
describe('review-12 (held up): a failed append with a later batch resolved first', () => {
  it('nothing of either batch leaves, no get shows them, and recover() seals both', async () => {
    const { DataDriver } = await import('../enclave/data/index.ts');
    const self = { name: 'a', ring: 1n, inc: 1 };
    const cfg = {
      replicas: 1, shards: 1, leaseTicks: 20, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 5, heartbeatTicks: 5,
      suspectTicks: 11, retryTicks: 5, proposeTimeoutTicks: 50, backoffTicksMax: 5, sessionsMax: 4, sessionsPerPrincipalMax: 4, windowMax: 4, queuedMax: 16,
    };
    let manual = false;
    const pending: Array<{ rs: readonly LogRecord[]; ok: () => void; fail: () => void }> = [];
    const records: LogRecord[] = [];
    const recovered: LogRecord[][] = [];
    const log: DataLog = {
      append: (rs) => {
        if (!manual) return Promise.resolve().then(() => void records.push(...rs));
        return new Promise<void>((resolve, reject) => pending.push({ rs, ok: () => (records.push(...rs), resolve()), fail: () => reject(new Error('EIO')) }));
      },
      load: async () => [...records],
      recover: async (state) => void recovered.push(state),
    };
    let now = 0;
    const sent: import('../enclave/data/index.ts').Outbound[] = [];
    const ticks: Array<() => void> = [];
    const later: Array<() => void> = [];
    const d = new DataDriver({
      self, config: cfg, peers: [self], genesis: [{ shard: 0, epoch: 1, members: [self] }], log,
      send: (m) => sent.push(m), clock: () => now, rand: () => 0.5,
      every: (_ms, fn) => { ticks.push(fn); return { stop: () => undefined }; },
      after: (_ms, fn) => void later.push(fn), tickMs: 10, reloadMs: 100,
    });
    await d.start();
    for (let i = 0; i < 60; i++) { now++; for (const t of ticks) t(); await d.idle(); }
    const reply = (rid: number) => sent.find((m) => m.kind === 'reply' && m.rid === rid);
    d.deliver({ kind: 'client', client: 'c', rid: 1, op: { kind: 'open', shard: 0, principal: 'c' } });
    await d.idle();
    const r1 = reply(1);
    if (!r1 || r1.kind !== 'reply' || !r1.result.ok || r1.result.kind !== 'open') throw new Error('no session');
    const s = r1.result.session;
    manual = true;
    const put = (rid: number, key: string, seq: number) => d.deliver({ kind: 'client', client: 'c', rid, op: { kind: 'put', key, value: 'v', ifVersion: null, session: s, seq, floor: 1, principal: 'c' } });
    put(2, 'x', 1);
    await Promise.resolve();
    put(3, 'y', 2);
    await Promise.resolve();
    d.deliver({ kind: 'client', client: 'c', rid: 4, op: { kind: 'get', key: 'y' } });
    await Promise.resolve();
    expect(pending.length).toBeGreaterThanOrEqual(2);
    pending[1]!.ok(); // the later batch is durable first
    await new Promise((r) => setTimeout(r, 0));
    expect([reply(2), reply(3), reply(4)]).toEqual([undefined, undefined, undefined]);
    pending[0]!.fail();
    for (const p of pending.slice(2)) p.ok();
    await new Promise((r) => setTimeout(r, 0));
    expect(d.serving).toBe(false);
    expect([reply(2), reply(3), reply(4)]).toEqual([undefined, undefined, undefined]);
    for (const f of later.splice(0)) f();
    await new Promise((r) => setTimeout(r, 0));
    expect(d.serving).toBe(true);
    const snap = recovered[0]?.find((r) => r.t === 'snap');
    expect(snap && snap.t === 'snap' ? [...snap.data.keys()].sort() : null).toEqual(['x', 'y']);
  });
});

describe('review-12 F1 follow-up: a scan under a steady stream of writes to its range is answered', () => {
  it('the scan waits for what its view held, not for the range to be quiet', async () => {
    const { store, log } = await singleNode();
    const shard = shardOf('apple', fast.shards as number);
    const keys: string[] = [];
    for (let i = 0; keys.length < 20; i++) if (shardOf(`k${i}`, fast.shards as number) === shard) keys.push(`k${i}`);
    const o = await store.local({ kind: 'open', shard, principal: 'p' });
    if (!o.ok || o.kind !== 'open') throw new Error('no session');
    // Every append lands 3 ms after it is made (a disk), so some record of the range is nearly always in flight.
    const land = log.append.bind(log);
    log.append = (rs) => new Promise<void>((resolve) => setTimeout(() => void land(rs).then(resolve), 3));
    let stop = false;
    let seq = 0;
    const writer = (async () => {
      while (!stop) {
        const n = ++seq;
        await Promise.all(keys.slice(0, 4).map((k, j) => store.local({ kind: 'put', key: k, value: `v${n}-${j}`, ifVersion: null, session: o.session, seq: n * 4 + j, floor: n * 4 + j, principal: 'p' })));
      }
    })();
    await sleep(100);
    const q = decodeScan({ sh: shard, l: 100, v: true }, fast.shards as number);
    const results = [];
    for (let i = 0; i < 5; i++) results.push(await scanHere(store, scanAccessOf({ check: () => undefined }), q, null));
    stop = true;
    await writer;
    expect(seq).toBeGreaterThan(10);
    for (const r of results) expect(r).toMatchObject({ ok: true });
  }, 30_000);
});
