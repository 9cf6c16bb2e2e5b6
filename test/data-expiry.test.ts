// Expiry in the data core (docs/consistency.md "Expiry"), driven by hand: instant network and disk, one range,
// three members. The simulator (test/sim-faults.test.ts) checks expiry under faults against the linearizability
// checker; these pin the rules: never early, "absent" only from a replicated tombstone, collected in bounded
// batches, counted from the restart after a restart, compare-and-set against "absent", the ttl in the digest.
import { describe, expect, it } from 'vitest';
import {
  type ClientOp, type ClientResult, type Config, type DataConfig, DataNode, type Entry, expiredHere, type LogRecord, logRecordToWire, type Member,
  type Outbound, peerBodyToWire, ttlTicksStretched, validateLogRecord, validatePeerBody,
} from '../enclave/data/index.ts';
import { DataError } from '../enclave/data/errors.ts';
import { getsPerWriteMax } from '../enclave/data/node.ts';
import { selectPage } from '../enclave/data/scan.ts';
import { deliverPeer, drainCores } from './helpers/core-net.ts';

const base: DataConfig = {
  replicas: 3, shards: 1, leaseTicks: 50, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 10, heartbeatTicks: 5,
  suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 4, sessionsPerPrincipalMax: 4, windowMax: 64,
  queuedMax: 64,
};

const members: Member[] = ['a', 'b', 'c'].map((name, i) => ({ name, ring: BigInt(i + 1) << 250n, inc: 1 }));
const genesis: Config[] = [{ shard: 0, epoch: 1, members }];

class Net {
  now = 0;
  readonly nodes = new Map<string, DataNode>();
  readonly replies = new Map<number, ClientResult>();
  readonly logs = new Map<string, LogRecord[]>();
  private rid = 0;
  private seed = 1;
  private readonly rand = (): number => ((this.seed = (this.seed * 16807) % 2147483647) / 2147483647);

  constructor(readonly cfg: DataConfig = base) {
    for (const m of members) this.nodes.set(m.name, new DataNode({ self: m, config: cfg, rand: this.rand, peers: members, log: [], genesis, now: 0 }));
  }

  node(name: string): DataNode {
    return this.nodes.get(name) as DataNode;
  }

  /** kill -9 and restart from the durable log at the current time. */
  restart(name: string): void {
    const m = members.find((x) => x.name === name) as Member;
    this.nodes.set(name, new DataNode({ self: m, config: this.cfg, rand: this.rand, peers: members, log: this.logs.get(name) ?? [], now: this.now }));
  }

  drain(): void {
    drainCores(() => this.nodes, this.logs, (m) => {
      if (m.kind === 'reply') this.replies.set(m.rid, m.result);
      else deliverPeer(this.nodes.get(m.to), m, this.now);
    });
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) {
      this.now++;
      for (const n of this.nodes.values()) n.tick(this.now);
      this.drain();
    }
  }

  ask(to: string, op: ClientOp): ClientResult | undefined {
    const rid = ++this.rid;
    this.node(to).step({ kind: 'client', client: 'cl', rid, op }, this.now);
    this.drain();
    return this.replies.get(rid);
  }

  owner(): string {
    const o = members.find((m) => this.node(m.name).isLeasedOwner(0, this.now));
    if (!o) throw new Error('no leased owner');
    return o.name;
  }

  /** Runs until some node is the leased owner (after a restart: the quiet period, the witness check, a new epoch). */
  settle(ticksMax = 600): string {
    for (let i = 0; i < ticksMax; i++) {
      const o = members.find((m) => this.node(m.name).isLeasedOwner(0, this.now));
      if (o) return o.name;
      this.run(1);
    }
    throw new Error('no owner emerged');
  }
}

let seqN = 1;
function started(cfg?: DataConfig): { net: Net; session: number } {
  const net = new Net(cfg);
  net.run(120);
  const r = net.ask(net.owner(), { kind: 'open', shard: 0, principal: 'p' });
  if (!r || !r.ok || r.kind !== 'open') throw new Error(`open failed: ${JSON.stringify(r)}`);
  seqN = 1;
  return { net, session: r.session };
}

function put(net: Net, session: number, key: string, value: string, extra: { ttl?: number; ifVersion?: number } = {}): ClientResult | undefined {
  const seq = seqN++;
  return net.ask(net.owner(), { kind: 'put', key, value, ifVersion: extra.ifVersion ?? null, session, seq, floor: seq, principal: 'p', ...(extra.ttl ? { ttl: extra.ttl } : {}) });
}

function get(net: Net, key: string): ClientResult | undefined {
  return net.ask(net.owner(), { kind: 'get', key });
}

const tombstones = (log: readonly LogRecord[], key: string): number =>
  log.filter((r) => r.t === 'w' && r.op.key === key && r.op.entry?.value === null && r.op.req === null).length;

describe('expiry in the data core', () => {
  it('is never early, and then absent from a tombstone every member holds', () => {
    const { net, session } = started();
    const ttl = 100;
    const t0 = net.now;
    expect(put(net, session, 'k', 'v', { ttl })).toMatchObject({ ok: true, version: 1 });
    // The owner counts ⌈ttl·(1+ρ)⌉ ticks from when it started the write: present until then.
    const here = ttlTicksStretched(ttl, base.driftPpm);
    expect(here).toBe(101);
    net.run(here - 1);
    expect(net.now - t0).toBe(here - 1);
    expect(get(net, 'k')).toMatchObject({ ok: true, found: true, value: 'v', version: 1 });
    net.run(2);
    expect(get(net, 'k')).toEqual({ ok: true, kind: 'get', found: false, value: null, version: 2 });
    for (const m of members) expect(tombstones(net.logs.get(m.name) ?? [], 'k')).toBe(1);
    expect(net.node(net.owner()).counters.expiredCollected).toBe(1);
  });

  it('a get past the deadline waits for the replicated tombstone before it answers "absent"', () => {
    const { net, session } = started();
    put(net, session, 'k', 'v', { ttl: 30 });
    const o = net.node(net.owner());
    // Time passes without a tick (no collection yet): the get arrives first.
    net.now += 40;
    o.step({ kind: 'client', client: 'cl', rid: 777, op: { kind: 'get', key: 'k' } }, net.now);
    const rd = o.ready();
    expect(rd.messages.some((m) => m.kind === 'reply')).toBe(false);
    expect(rd.persist.some((r) => r.t === 'w' && r.op.key === 'k' && r.op.entry?.value === null)).toBe(true);
    // Put the batch back through the harness (persist, then send): the answer comes once every member acked.
    net.logs.set(o.self.name, [...(net.logs.get(o.self.name) ?? []), ...rd.persist]);
    for (const m of rd.messages) if (m.kind === 'peer') net.node(m.to).step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc }, net.now);
    net.drain();
    expect(net.replies.get(777)).toMatchObject({ ok: true, found: false, version: 2 });
  });

  it('bounds the gets waiting for an expiry the members do not acknowledge (the oldest answered UNAVAILABLE)', () => {
    const { net, session } = started();
    put(net, session, 'k', 'v', { ttl: 5 });
    const o = net.node(net.owner());
    net.now += 10; // past the deadline; nothing is delivered from here on (the members never acknowledge)
    for (let rid = 1000; rid < 1000 + getsPerWriteMax + 3; rid++) o.step({ kind: 'client', client: 'cl', rid, op: { kind: 'get', key: 'k' } }, net.now);
    const replies = o.ready().messages.filter((m) => m.kind === 'reply');
    expect(replies.map((m) => m.kind === 'reply' && m.rid)).toEqual([1000, 1001, 1002]);
    expect(replies.every((m) => m.kind === 'reply' && !m.result.ok && m.result.code === 'UNAVAILABLE')).toBe(true);
  });

  it('stays absent across a whole-ring restart (the tombstone is sealed); broken: expiryNotDurable resurrects it', () => {
    for (const broken of [false, true]) {
      const { net, session } = started(broken ? { ...base, broken: { expiryNotDurable: true } } : base);
      // A ttl longer than the restart takes, so that a value brought back would still be inside its new count.
      put(net, session, 'k', 'v', { ttl: 200 });
      net.run(220);
      expect(get(net, 'k')).toMatchObject({ ok: true, found: false });
      for (const m of members) net.restart(m.name);
      const at = net.now;
      net.settle();
      expect(net.now - at).toBeLessThan(200);
      const after = get(net, 'k');
      if (broken) expect(after).toMatchObject({ ok: true, found: true, value: 'v' });
      else expect(after).toMatchObject({ ok: true, found: false, version: 2 });
    }
  });

  it('a restarted node counts the ttl from its restart (later, never earlier)', () => {
    const { net, session } = started();
    put(net, session, 'k', 'v', { ttl: 300 });
    net.run(100);
    for (const m of members) net.restart(m.name);
    const restartedAt = net.now;
    const owner = net.settle();
    // Its log's record says 303 left (the write's own ttl, stretched once): counted again from the restart.
    const e = net.node(owner).ownedEntry('k', net.now) as Entry;
    expect(e.value).toBe('v');
    expect(e.until).toBeGreaterThanOrEqual(restartedAt + 300);
    expect(expiredHere(e, restartedAt + 299)).toBe(false);
    net.run(restartedAt + ttlTicksStretched(300, base.driftPpm) + 3 - net.now);
    expect(get(net, 'k')).toMatchObject({ ok: true, found: false });
  });

  it('a long ttl is stretched once, never again: moves and restarts only count down (no growth past the bound)', () => {
    const { net, session } = started();
    const ttl = 3_000_000_000; // about a year of 10 ms ticks
    put(net, session, 'k', 'v', { ttl });
    const left = (): number => {
      const o = net.node(net.settle());
      return ((o.ownedEntry('k', net.now) as Entry).until as number) - net.now;
    };
    const first = left();
    expect(first).toBeLessThanOrEqual(ttlTicksStretched(ttl, base.driftPpm));
    for (let i = 0; i < 5; i++) {
      for (const m of members) net.restart(m.name);
      expect(left()).toBeLessThanOrEqual(first);
    }
  });

  it('compare-and-set sees an expired value as absent; the ttl is part of the request', () => {
    const { net, session } = started();
    put(net, session, 'k', 'v', { ttl: 10 });
    net.now += 20; // past the deadline, before the collector ran
    // CONFLICT on "no value" carries the version of what removed it (t): the expiry's tombstone, above the value's.
    expect(put(net, session, 'k', 'w', { ifVersion: 1 })).toEqual({ ok: false, code: 'CONFLICT', version: 0, t: 2 });
    expect(put(net, session, 'k', 'w', { ifVersion: 0 })).toMatchObject({ ok: true, version: 3, existed: false });
    // A retry of the same (session, seq) with another ttl is another request: refused.
    const seq = seqN++;
    const op = (ttl?: number): ClientOp => ({ kind: 'put', key: 'j', value: 'x', ifVersion: null, session, seq, floor: seq, principal: 'p', ...(ttl ? { ttl } : {}) });
    expect(net.ask(net.owner(), op(50))).toMatchObject({ ok: true, version: 1 });
    expect(net.ask(net.owner(), op(50))).toMatchObject({ ok: true, version: 1 });
    expect(net.ask(net.owner(), op(60))).toEqual({ ok: false, code: 'BAD_REQUEST' });
    expect(net.ask(net.owner(), op())).toEqual({ ok: false, code: 'BAD_REQUEST' });
  });

  it('collects at most expireBatchMax values per tick, earliest first', () => {
    const { net, session } = started({ ...base, expireBatchMax: 2 });
    for (let i = 0; i < 7; i++) put(net, session, `k${i}`, 'v', { ttl: 10 }); // one deadline for all: now + 11
    const o = net.node(net.owner());
    const collected = (): number => [0, 1, 2, 3, 4, 5, 6].reduce((a, i) => a + tombstones(net.logs.get(o.self.name) ?? [], `k${i}`), 0);
    net.run(10);
    expect(collected()).toBe(0);
    net.run(1);
    expect(collected()).toBe(2);
    net.run(1);
    expect(collected()).toBe(4);
    net.run(5);
    expect(collected()).toBe(7);
    expect(o.counters.expiredCollected).toBe(7);
    for (let i = 0; i < 7; i++) expect(get(net, `k${i}`)).toMatchObject({ found: false });
  });

  it('an overwrite without a ttl keeps the key; an overwrite with one restarts the count', () => {
    const { net, session } = started();
    put(net, session, 'a', '1', { ttl: 10 });
    put(net, session, 'a', '2');
    put(net, session, 'b', '1', { ttl: 10 });
    net.run(8);
    put(net, session, 'b', '2', { ttl: 50 });
    net.run(20);
    expect(get(net, 'a')).toMatchObject({ found: true, value: '2', version: 2 });
    expect(get(net, 'b')).toMatchObject({ found: true, value: '2', version: 2 });
    net.run(40);
    expect(get(net, 'b')).toMatchObject({ found: false, version: 3 });
  });

  it('a scan skips a value past its deadline here (expiredHere), before and after its tombstone', () => {
    const { net, session } = started();
    put(net, session, 'a', '1', { ttl: 10 });
    put(net, session, 'b', '2');
    const keysAt = (): string[] => {
      const view = net.node(net.owner()).scanView(0, net.now);
      if (!view) throw new Error('no view');
      return selectPage(view, { prefix: '', after: null, limit: 10, bytesMax: 1 << 20, values: false, decide: () => true, live: (_k, e) => !expiredHere(e, net.now) }).entries.map((e) => e.key);
    };
    expect(keysAt()).toEqual(['a', 'b']);
    net.now += 11; // past the deadline, not collected yet
    expect(keysAt()).toEqual(['b']);
    net.run(2);
    expect(keysAt()).toEqual(['b']);
  });

  it('broken: expiryLocalOnly answers "absent" from the owner\'s clock alone, with no tombstone anywhere', () => {
    const { net, session } = started({ ...base, broken: { expiryLocalOnly: true } });
    put(net, session, 'k', 'v', { ttl: 10 });
    net.run(20);
    expect(get(net, 'k')).toMatchObject({ ok: true, found: false });
    for (const m of members) expect(tombstones(net.logs.get(m.name) ?? [], 'k')).toBe(0);
  });
});

describe('expiry on the wire and in the log', () => {
  const entry: Entry = { value: 'v', version: 3, epoch: 2, ttl: 77, until: 123456 };

  it('carries the ticks left, never a node\'s own deadline', () => {
    const body = validatePeerBody(structuredClone(peerBodyToWire({ t: 'sync', config: genesis[0] as Config, data: new Map([['k', entry]]), sessions: { next: 1, clock: 0, table: new Map() } })), 1);
    expect(body.t === 'sync' && body.data.get('k')).toEqual({ value: 'v', version: 3, epoch: 2, ttl: 77 });
    const rec = validateLogRecord(structuredClone(logRecordToWire({ t: 'w', shard: 0, epoch: 2, op: { key: 'k', entry, req: null, open: null } })), 1);
    expect(rec.t === 'w' && rec.op.entry).toEqual({ value: 'v', version: 3, epoch: 2, ttl: 77 });
  });

  it('refuses a ttl on a tombstone, a negative or oversized one, and a ttl of 0 from a client', () => {
    const bad = (e: Record<string, unknown>): unknown => validatePeerBody({ t: 'replicate', shard: 0, epoch: 1, opId: 1, op: { key: Buffer.from('k'), entry: e, req: null, open: null } }, 1);
    expect(() => bad({ value: null, version: 2, epoch: 1, ttl: 5 })).toThrow(DataError);
    expect(() => bad({ value: Buffer.from('v'), version: 2, epoch: 1, ttl: -1 })).toThrow(DataError);
    expect(() => bad({ value: Buffer.from('v'), version: 2, epoch: 1, ttl: 2 ** 60 })).toThrow(DataError);
    expect(() => bad({ value: Buffer.from('v'), version: 2, epoch: 1, ttl: 'soon' })).toThrow(DataError);
  });
});
