// DataDriver: persist before send, batches in order, and fail-closed on a failed append (the batch's answers
// never leave; the core is rebuilt from the log and serves again by itself).
import { describe, expect, it } from 'vitest';
import { type ClientResult, type DataConfig, DataDriver, type LogRecord, type Member, type Outbound, shardOf } from '../enclave/data/index.ts';

const cfg: DataConfig = {
  replicas: 1, shards: 1, leaseTicks: 20, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 5, heartbeatTicks: 5,
  suspectTicks: 11, retryTicks: 5, proposeTimeoutTicks: 50, backoffTicksMax: 5, sessionsMax: 4, sessionsPerPrincipalMax: 4, windowMax: 4, queuedMax: 16,
};
const self: Member = { name: 'a', ring: 1n, inc: 1 };

class FakeLog {
  records: LogRecord[] = [];
  failNext = false;
  appends = 0;
  async append(rs: readonly LogRecord[]): Promise<void> {
    await Promise.resolve();
    this.appends++;
    if (this.failNext) {
      this.failNext = false;
      throw new Error('EIO');
    }
    this.records.push(...rs);
  }
  async load(): Promise<LogRecord[]> {
    return [...this.records];
  }
}

function setup(): { d: DataDriver; log: FakeLog; sent: Outbound[]; advance: (n: number) => Promise<void>; later: Array<() => void>; fails: number[] } {
  let now = 0;
  const log = new FakeLog();
  const sent: Outbound[] = [];
  const ticks: Array<() => void> = [];
  const later: Array<() => void> = [];
  const fails: number[] = [];
  const d = new DataDriver({
    self, config: cfg, peers: [self], genesis: [{ shard: 0, epoch: 1, members: [self] }], log,
    send: (m) => sent.push(m), clock: () => now, rand: () => 0.5,
    every: (_ms, fn) => { ticks.push(fn); return { stop: () => void 0 }; },
    after: (_ms, fn) => void later.push(fn),
    tickMs: 10, reloadMs: 100, onFailClosed: () => fails.push(now),
  });
  const advance = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) {
      now++;
      for (const t of ticks) t();
      await d.idle();
    }
  };
  return { d, log, sent, advance, later, fails };
}

function reply(sent: Outbound[], rid: number): ClientResult | undefined {
  const m = sent.find((x) => x.kind === 'reply' && x.rid === rid);
  return m && m.kind === 'reply' ? m.result : undefined;
}

async function openSession(d: DataDriver, sent: Outbound[], rid: number): Promise<number> {
  d.deliver({ kind: 'client', client: 'c', rid, op: { kind: 'open', shard: 0, principal: 'c' } });
  await d.idle();
  const r = reply(sent, rid);
  if (!r || !r.ok || r.kind !== 'open') throw new Error(`no session: ${JSON.stringify(r)}`);
  return r.session;
}

describe('data driver', () => {
  it('sends an answer only after its records are in the log', async () => {
    const { d, log, sent, advance } = setup();
    await d.start();
    await advance(60);
    expect(d.node?.isActiveOwner(0)).toBe(true);
    const s = await openSession(d, sent, 1);
    const before = log.records.length;
    d.deliver({ kind: 'client', client: 'c', rid: 2, op: { kind: 'put', key: 'x', value: 'v', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    expect(reply(sent, 2)).toBeUndefined(); // not before the append resolves
    await d.idle();
    expect(reply(sent, 2)).toEqual({ ok: true, kind: 'write', version: 1, existed: false });
    expect(log.records.slice(before).some((r) => r.t === 'w' && r.op.key === 'x')).toBe(true);
  });

  it('fails closed on a failed append, never sends that answer, and serves again after reloading the log', async () => {
    const { d, log, sent, advance, later, fails } = setup();
    await d.start();
    await advance(60);
    const s = await openSession(d, sent, 1);
    log.failNext = true;
    d.deliver({ kind: 'client', client: 'c', rid: 2, op: { kind: 'put', key: 'x', value: 'lost', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    await d.idle();
    expect(reply(sent, 2)).toBeUndefined();
    expect(d.serving).toBe(false);
    expect(fails).toHaveLength(1);
    d.deliver({ kind: 'client', client: 'c', rid: 3, op: { kind: 'get', key: 'x' } });
    await d.idle();
    expect(reply(sent, 3)).toBeUndefined(); // failed closed: nothing answers
    for (const f of later.splice(0)) f();
    await new Promise((r) => setTimeout(r, 0));
    expect(d.serving).toBe(true);
    await advance(80); // quiet period, then a new epoch
    expect(d.node?.isActiveOwner(0)).toBe(true);
    d.deliver({ kind: 'client', client: 'c', rid: 4, op: { kind: 'get', key: 'x' } });
    await d.idle();
    expect(reply(sent, 4)).toMatchObject({ ok: true, found: false });
    // The retry of the failed request (same id) now applies once.
    d.deliver({ kind: 'client', client: 'c', rid: 5, op: { kind: 'put', key: 'x', value: 'lost', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    await d.idle();
    expect(reply(sent, 5)).toEqual({ ok: true, kind: 'write', version: 1, existed: false });
  });
});

class ResealLog extends FakeLog {
  recovered: LogRecord[][] = [];
  failRecover = 0;
  async recover(state: LogRecord[]): Promise<void> {
    await Promise.resolve();
    if (this.failRecover > 0) {
      this.failRecover--;
      throw new Error('EIO');
    }
    this.recovered.push(state);
    this.records = [...state];
  }
}

describe('data driver with a log that can be sealed again (enclave/persist.ts)', () => {
  it('after a failed append, seals the failed core\'s whole state again and serves from it; a retry of the failed write applies once', async () => {
    let now = 0;
    const log = new ResealLog();
    const sent: Outbound[] = [];
    const ticks: Array<() => void> = [];
    const later: Array<() => void> = [];
    const d = new DataDriver({
      self, config: cfg, peers: [self], genesis: [{ shard: 0, epoch: 1, members: [self] }], log,
      send: (m) => sent.push(m), clock: () => now, rand: () => 0.5,
      every: (_ms, fn) => { ticks.push(fn); return { stop: () => void 0 }; },
      after: (_ms, fn) => void later.push(fn), tickMs: 10, reloadMs: 100,
    });
    const advance = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        now++;
        for (const t of ticks) t();
        await d.idle();
      }
    };
    await d.start();
    await advance(60);
    const s = await openSession(d, sent, 1);
    log.failNext = true;
    d.deliver({ kind: 'client', client: 'c', rid: 2, op: { kind: 'put', key: 'x', value: 'maybe', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    await d.idle();
    expect(reply(sent, 2)).toBeUndefined();
    expect(d.serving).toBe(false);
    log.failRecover = 1; // the disk still fails once: it keeps trying
    for (const f of later.splice(0)) f();
    await new Promise((r) => setTimeout(r, 0));
    expect(d.serving).toBe(false);
    for (const f of later.splice(0)) f();
    await new Promise((r) => setTimeout(r, 0));
    expect(d.serving).toBe(true);
    // The state sealed again holds the write that was in doubt (its messages were never sent: outcome unknown).
    expect(log.recovered).toHaveLength(1);
    expect(log.recovered[0]?.some((r) => r.t === 'snap' && r.data.get('x')?.value === 'maybe')).toBe(true);
    await advance(80);
    expect(d.node?.isActiveOwner(0)).toBe(true);
    d.deliver({ kind: 'client', client: 'c', rid: 3, op: { kind: 'put', key: 'x', value: 'maybe', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    await d.idle();
    expect(reply(sent, 3)).toEqual({ ok: true, kind: 'write', version: 1, existed: false });
    d.deliver({ kind: 'client', client: 'c', rid: 4, op: { kind: 'get', key: 'x' } });
    await d.idle();
    expect(reply(sent, 4)).toMatchObject({ ok: true, found: true, value: 'maybe', version: 1 });
  });

  it('asks for a snapshot after an append and hands over exactly the core\'s state at that point', async () => {
    let now = 0;
    const snaps: LogRecord[][] = [];
    let want = false;
    const log = Object.assign(new FakeLog(), {
      wantsSnapshot: () => want,
      snapshot: (rs: LogRecord[]) => {
        snaps.push(rs);
        want = false;
      },
    });
    const sent: Outbound[] = [];
    const ticks: Array<() => void> = [];
    const d = new DataDriver({
      self, config: cfg, peers: [self], genesis: [{ shard: 0, epoch: 1, members: [self] }], log,
      send: (m) => sent.push(m), clock: () => now, rand: () => 0.5,
      every: (_ms, fn) => { ticks.push(fn); return { stop: () => void 0 }; },
      after: () => undefined, tickMs: 10, reloadMs: 100,
    });
    await d.start();
    for (let i = 0; i < 60; i++) { now++; for (const t of ticks) t(); await d.idle(); }
    const s = await openSession(d, sent, 1);
    want = true;
    d.deliver({ kind: 'client', client: 'c', rid: 2, op: { kind: 'put', key: 'x', value: 'v', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    await d.idle();
    expect(snaps).toHaveLength(1);
    // Replaying the snapshot gives the state replaying the whole log gives.
    const { DataNode } = await import('../enclave/data/index.ts');
    const fromSnap = new DataNode({ self, config: cfg, rand: () => 0.5, peers: [], log: snaps[0] as LogRecord[], now });
    const fromLog = new DataNode({ self, config: cfg, rand: () => 0.5, peers: [], log: log.records, now });
    const strip = (rs: LogRecord[]): LogRecord[] => rs.map((r) => (r.t === 'mark' ? { ...r, pos: 0 } : r));
    expect(strip(fromSnap.durableRecords())).toEqual(strip(fromLog.durableRecords()));
    // A snapshot replays to exactly the position of the log it replaces (its last record is a mark of it): a larger
    // one would let a copy rolled back by fewer records than the snapshot holds pass the witness check.
    expect(fromSnap.position).toBe(fromLog.position);
    const last = fromSnap.durableRecords().at(-1);
    expect(last).toMatchObject({ t: 'mark', pos: fromSnap.position });
    expect(fromSnap.durableRecords().some((r) => r.t === 'snap' && r.data.get('x')?.value === 'v')).toBe(true);
  });
});

// R1 (docs/durability.md): a get's answer waits only for the records it may depend on (its range's and the
// node's), not for every batch before it. Fails with the core's broken flag readsDependOnNothing.
describe('data driver: reads wait for their own range only (R1)', () => {
  const two: DataConfig = { ...cfg, shards: 2 };
  async function run(broken: boolean): Promise<{ early: ClientResult | undefined; other: ClientResult | undefined; after: ClientResult | undefined }> {
    let now = 0;
    const held: Array<() => void> = [];
    let hold = false;
    const records: LogRecord[] = [];
    const log = {
      append: (rs: readonly LogRecord[]): Promise<void> => {
        const land = (): void => void records.push(...rs);
        if (!hold) return Promise.resolve().then(land);
        return new Promise<void>((resolve) => held.push(() => (land(), resolve())));
      },
      load: async () => [...records],
    };
    const sent: Outbound[] = [];
    const ticks: Array<() => void> = [];
    const d = new DataDriver({
      self, config: broken ? { ...two, broken: { readsDependOnNothing: true } } : two, peers: [self],
      genesis: [0, 1].map((shard) => ({ shard, epoch: 1, members: [self] })), log,
      send: (m) => sent.push(m), clock: () => now, rand: () => 0.5,
      every: (_ms, fn) => { ticks.push(fn); return { stop: () => void 0 }; },
      after: () => undefined, tickMs: 10, reloadMs: 100,
    });
    await d.start();
    for (let i = 0; i < 60; i++) {
      now++;
      for (const t of ticks) t();
      await d.idle();
    }
    expect(d.node?.isActiveOwner(0) && d.node.isActiveOwner(1)).toBe(true);
    const keyIn = (shard: number): string => Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => shardOf(k, 2) === shard) as string;
    const [k0, k1] = [keyIn(0), keyIn(1)];
    const s = await openSession(d, sent, 1);
    hold = true; // the disk is slow from here on: nothing appended now is durable yet
    d.deliver({ kind: 'client', client: 'c', rid: 2, op: { kind: 'put', key: k0, value: 'new', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } });
    d.deliver({ kind: 'client', client: 'c', rid: 3, op: { kind: 'get', key: k0 } });
    d.deliver({ kind: 'client', client: 'c', rid: 4, op: { kind: 'get', key: k1 } });
    await Promise.resolve();
    const early = reply(sent, 3);
    const other = reply(sent, 4);
    expect(reply(sent, 2)).toBeUndefined();
    for (const f of held.splice(0)) f();
    hold = false;
    await d.idle();
    return { early, other, after: reply(sent, 3) };
  }

  it('a get in a range with a record not yet durable waits for it; a get in another range is answered at once', async () => {
    const r = await run(false);
    expect(r.early).toBeUndefined(); // R = 1: the put committed in memory, its record is not durable yet
    expect(r.other).toEqual({ ok: true, kind: 'get', found: false, value: null, version: 0 });
    expect(r.after).toEqual({ ok: true, kind: 'get', found: true, value: 'new', version: 1 });
  });

  it('broken (readsDependOnNothing): the value of a write not yet durable is shown', async () => {
    const r = await run(true);
    expect(r.early).toEqual({ ok: true, kind: 'get', found: true, value: 'new', version: 1 });
  });
});
