// The data core (enclave/data/) driven by hand: instant network and disk, one range, three members. The
// simulator (test/sim-faults.test.ts) covers faults; these pin the rules one message at a time.
import { describe, expect, it } from 'vitest';
import {
  type ClientOp, type ClientResult, type Config, type DataConfig, DataNode, type LogRecord, type Member, type Outbound, type PeerBody,
} from '../enclave/data/index.ts';

const cfg: DataConfig = {
  replicas: 3, shards: 1, leaseTicks: 50, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 10, heartbeatTicks: 5,
  suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 2, sessionsPerPrincipalMax: 2, windowMax: 4,
  queuedMax: 16,
};

const members: Member[] = ['a', 'b', 'c'].map((name, i) => ({ name, ring: BigInt(i + 1) << 250n, inc: 1 }));
const genesis: Config[] = [{ shard: 0, epoch: 1, members }];

class Net {
  now = 0;
  readonly nodes = new Map<string, DataNode>();
  readonly replies = new Map<number, ClientResult>();
  /** Everything the nodes sent, for assertions. */
  readonly sent: Outbound[] = [];
  /** Each node's durable log (instant disk). */
  readonly logs = new Map<string, LogRecord[]>();
  private rid = 0;

  constructor() {
    let seed = 1;
    const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (const m of members) {
      this.nodes.set(m.name, new DataNode({ self: m, config: cfg, rand, peers: members, log: [], genesis, now: 0 }));
    }
  }

  node(name: string): DataNode {
    return this.nodes.get(name) as DataNode;
  }

  drain(): void {
    for (let round = 0; round < 1000; round++) {
      const out: Outbound[] = [];
      for (const [name, n] of this.nodes) {
        const rd = n.ready();
        this.logs.set(name, [...(this.logs.get(name) ?? []), ...rd.persist]);
        out.push(...rd.messages);
      }
      if (out.length === 0) return;
      for (const m of out) {
        this.sent.push(m);
        if (m.kind === 'reply') this.replies.set(m.rid, m.result);
        else this.nodes.get(m.to)?.step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos }, this.now);
      }
    }
    throw new Error('the network never went quiet');
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
    const o = members.find((m) => this.node(m.name).isActiveOwner(0));
    if (!o) throw new Error('no active owner');
    return o.name;
  }
}

function started(): Net {
  const net = new Net();
  net.run(120); // past the quiet period and the first proposal: a new epoch, synced, with a lease
  return net;
}

function openSession(net: Net): number {
  const r = net.ask(net.owner(), { kind: 'open', shard: 0, principal: 'c' });
  if (!r || !r.ok || r.kind !== 'open') throw new Error(`open failed: ${JSON.stringify(r)}`);
  return r.session;
}

describe('data core', () => {
  it('a founding ring elects one owner at a new epoch, and only it serves', () => {
    const net = started();
    const owner = net.owner();
    expect(net.node(owner).configOf(0)?.epoch).toBeGreaterThan(1);
    const other = members.find((m) => m.name !== owner)?.name as string;
    expect(net.ask(other, { kind: 'get', key: 'x' })).toEqual({ ok: false, code: 'NOT_OWNER', hint: owner });
    expect(net.ask(owner, { kind: 'get', key: 'x' })).toMatchObject({ ok: true, found: false });
  });

  it('persists a write before replicating it, and answers only after every member persisted it', () => {
    const net = started();
    const owner = net.owner();
    const s = openSession(net);
    const o = net.node(owner);
    o.step({ kind: 'client', client: 'cl', rid: 99, op: { kind: 'put', key: 'x', value: 'v', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' } }, net.now);
    const rd = o.ready();
    expect(rd.persist.map((r) => r.t)).toEqual(['w']);
    expect(rd.messages.filter((m) => m.kind === 'peer' && m.body.t === 'replicate')).toHaveLength(2);
    expect(rd.messages.some((m) => m.kind === 'reply')).toBe(false);
    // One replica answers: still no reply.
    const [r1, r2] = rd.messages as Array<Extract<Outbound, { kind: 'peer' }>>;
    const replica1 = net.node((r1 as { to: string }).to);
    replica1.step({ kind: 'peer', from: r1?.from as Member, body: r1?.body as PeerBody }, net.now);
    const rr = replica1.ready();
    expect(rr.persist.map((r) => r.t)).toEqual(['w']);
    const ack = rr.messages[0] as Extract<Outbound, { kind: 'peer' }>;
    expect(ack.body.t).toBe('replicateAck');
    o.step({ kind: 'peer', from: ack.from, body: ack.body }, net.now);
    expect(o.ready().messages.some((m) => m.kind === 'reply')).toBe(false);
    const replica2 = net.node((r2 as { to: string }).to);
    replica2.step({ kind: 'peer', from: r2?.from as Member, body: r2?.body as PeerBody }, net.now);
    const ack2 = replica2.ready().messages[0] as Extract<Outbound, { kind: 'peer' }>;
    o.step({ kind: 'peer', from: ack2.from, body: ack2.body }, net.now);
    expect(o.ready().messages).toContainEqual({ kind: 'reply', to: 'cl', rid: 99, result: { ok: true, kind: 'write', version: 1, existed: false } });
  });

  it('compare-and-set: 0 means only if absent; a mismatch is CONFLICT with the live version', () => {
    const net = started();
    const owner = net.owner();
    const s = openSession(net);
    const put = (seq: number, value: string, ifVersion: number | null): ClientResult | undefined =>
      net.ask(owner, { kind: 'put', key: 'x', value, ifVersion, session: s, seq, floor: seq, principal: 'c' });
    expect(put(1, 'a', 0)).toEqual({ ok: true, kind: 'write', version: 1, existed: false });
    expect(put(2, 'b', 0)).toEqual({ ok: false, code: 'CONFLICT', version: 1 });
    expect(put(3, 'c', 1)).toEqual({ ok: true, kind: 'write', version: 2, existed: true });
    expect(net.ask(owner, { kind: 'del', key: 'x', ifVersion: 1, session: s, seq: 4, floor: 4, principal: 'c' })).toEqual({ ok: false, code: 'CONFLICT', version: 2 });
    expect(net.ask(owner, { kind: 'del', key: 'x', ifVersion: 2, session: s, seq: 5, floor: 5, principal: 'c' })).toEqual({ ok: true, kind: 'write', version: 3, existed: true });
    expect(net.ask(owner, { kind: 'del', key: 'x', ifVersion: null, session: s, seq: 6, floor: 6, principal: 'c' })).toEqual({ ok: true, kind: 'write', version: 3, existed: false });
    expect(net.ask(owner, { kind: 'get', key: 'x' })).toMatchObject({ ok: true, found: false });
  });

  it('a retry with the same request id gets the first answer and changes nothing', () => {
    const net = started();
    const owner = net.owner();
    const s = openSession(net);
    const op: ClientOp = { kind: 'put', key: 'x', value: 'a', ifVersion: 0, session: s, seq: 1, floor: 1, principal: 'c' };
    expect(net.ask(owner, op)).toEqual({ ok: true, kind: 'write', version: 1, existed: false });
    net.ask(owner, { kind: 'put', key: 'x', value: 'b', ifVersion: null, session: s, seq: 2, floor: 2, principal: 'c' });
    // The first request again (a late duplicate or a retry): its first answer, not CONFLICT, not a new version.
    const o = net.node(owner);
    o.step({ kind: 'client', client: 'cl', rid: 500, op }, net.now);
    const rd = o.ready();
    expect(rd.persist).toEqual([]);
    expect(rd.messages).toEqual([{ kind: 'reply', to: 'cl', rid: 500, result: { ok: false, code: 'STALE_REQUEST' } }]);
    // Within the window (floor not yet past it) the stored result comes back.
    const op3: ClientOp = { kind: 'del', key: 'x', ifVersion: null, session: s, seq: 3, floor: 3, principal: 'c' };
    expect(net.ask(owner, op3)).toEqual({ ok: true, kind: 'write', version: 3, existed: true });
    expect(net.ask(owner, op3)).toEqual({ ok: true, kind: 'write', version: 3, existed: true });
    expect(net.ask(owner, { kind: 'get', key: 'x' })).toMatchObject({ ok: true, found: false });
  });

  it('past the session bound the oldest session expires: its requests are refused, never applied', () => {
    const net = started();
    const owner = net.owner();
    const s1 = openSession(net);
    openSession(net);
    openSession(net); // sessionsMax = 2: evicts s1
    const r = net.ask(owner, { kind: 'put', key: 'x', value: 'a', ifVersion: null, session: s1, seq: 1, floor: 1, principal: 'c' });
    expect(r).toEqual({ ok: false, code: 'SESSION_EXPIRED' });
    expect(net.ask(owner, { kind: 'get', key: 'x' })).toMatchObject({ ok: true, found: false });
    expect(net.ask(owner, { kind: 'put', key: 'x', value: 'a', ifVersion: null, session: 999, seq: 1, floor: 1, principal: 'c' })).toEqual({ ok: false, code: 'BAD_REQUEST' });
  });

  it('a member refuses replication from anyone but its epoch\'s owner, and says so (FENCED)', () => {
    const net = started();
    const owner = net.owner();
    const [x, y] = members.filter((m) => m.name !== owner);
    const epoch = net.node(owner).configOf(0)?.epoch as number;
    const forged: PeerBody = { t: 'replicate', shard: 0, epoch, opId: 1, op: { key: 'x', entry: { value: 'z', version: 9, epoch }, req: null, open: null } };
    net.node(y?.name as string).step({ kind: 'peer', from: x as Member, body: forged }, net.now);
    const rd = net.node(y?.name as string).ready();
    expect(rd.persist).toEqual([]);
    expect(rd.messages).toEqual([{ kind: 'peer', to: x?.name, from: y, body: { t: 'fenced', shard: 0, epoch }, pos: expect.any(Number) }]);
    // An old epoch from the real owner is refused the same way.
    const old: PeerBody = { ...forged, epoch: epoch - 1 } as PeerBody;
    net.node(y?.name as string).step({ kind: 'peer', from: members.find((m) => m.name === owner) as Member, body: old }, net.now);
    expect(net.node(y?.name as string).ready().messages[0]).toMatchObject({ body: { t: 'fenced' } });
  });

  it('a member that granted a read lease does not help elect another owner until it ran out', () => {
    const net = started();
    const owner = net.owner();
    const [x, y] = members.filter((m) => m.name !== owner);
    const base = net.node(owner).configOf(0) as Config;
    const prepare: PeerBody = { t: 'prepare', base, ballot: { round: 1000, name: x?.name as string, inc: 1 } };
    net.node(y?.name as string).step({ kind: 'peer', from: x as Member, body: prepare }, net.now);
    expect(net.node(y?.name as string).ready().messages[0]).toMatchObject({ body: { t: 'reject', reason: 'LEASED' } });
    // The owner stops renewing (cut off); after the lease has run out on y's clock, y promises.
    net.nodes.delete(owner);
    net.now += cfg.leaseTicks + 1;
    net.node(y?.name as string).step({ kind: 'peer', from: x as Member, body: prepare }, net.now);
    expect(net.node(y?.name as string).ready().messages[0]).toMatchObject({ body: { t: 'promise' } });
  });

  it('a node restarted from a rolled-back log (a prefix) finds out from its peers\' witnesses and takes a new incarnation', () => {
    for (const broken of [false, true]) {
      const net = started();
      const owner = net.owner();
      const y = members.find((m) => m.name !== owner) as Member;
      const s = openSession(net);
      net.ask(owner, { kind: 'put', key: 'x', value: 'a', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' });
      const old = [...(net.logs.get(y.name) as LogRecord[])]; // an older genuine copy of y's log
      for (let seq = 2; seq <= 3; seq++) net.ask(owner, { kind: 'put', key: 'x', value: `v${seq}`, ifVersion: null, session: s, seq, floor: seq, principal: 'c' });
      const full = [...(net.logs.get(y.name) as LogRecord[])];
      const restart = (log: LogRecord[]): DataNode => {
        let seed = 7;
        const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
        const c = broken ? { ...cfg, broken: { noWitnessCheck: true } } : cfg;
        const n = new DataNode({ self: y, config: c, rand, peers: members, log, now: net.now });
        net.nodes.set(y.name, n);
        net.logs.set(y.name, [...log]);
        return n;
      };
      // From its whole log: the same member (no false alarm).
      let n = restart(full);
      expect(n.checkingState).toBe(!broken);
      net.run(cfg.leaseTicks + 20);
      expect(n.checkingState).toBe(false);
      expect(n.self.inc).toBe(1);
      // From the older copy: the owner witnessed acknowledgements past it, so y must not act as y/1 again.
      n = restart(old);
      net.run(cfg.leaseTicks + 20);
      expect(n.checkingState).toBe(false);
      if (broken) {
        expect(n.self.inc).toBe(1); // the broken build trusts its rolled-back state
        continue;
      }
      expect(n.self.inc).toBe(2);
      expect(n.configOf(0)?.members.some((m) => m.name === y.name && m.inc === 1) ?? false).toBe(false);
      // The new incarnation is durable: replaying its log gives it again.
      const again = new DataNode({ self: y, config: cfg, rand: () => 0.5, peers: members, log: net.logs.get(y.name) as LogRecord[], now: net.now });
      expect(again.self.inc).toBe(2);
    }
  });
});
