// The data core (enclave/data/) driven by hand: instant network and disk, one range, three members. The
// simulator (test/sim-faults.test.ts) covers faults; these pin the rules one message at a time.
import { describe, expect, it } from 'vitest';
import {
  type ClientOp, type ClientResult, type Config, type DataConfig, DataNode, type LogRecord, type Member, type Outbound, type PeerBody,
} from '../enclave/data/index.ts';
import { queuedPerPrincipalMax } from '../enclave/data/node.ts';

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
  /** A second copy of a node (same name): every message for the name reaches both (the host's choice). */
  readonly twins = new Map<string, DataNode>();
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
      for (const [name, n] of this.twins) {
        const rd = n.ready();
        this.logs.set(`${name}'`, [...(this.logs.get(`${name}'`) ?? []), ...rd.persist]);
        out.push(...rd.messages);
      }
      if (out.length === 0) return;
      for (const m of out) {
        this.sent.push(m);
        if (m.kind === 'reply') this.replies.set(m.rid, m.result);
        else {
          const inbound = { kind: 'peer' as const, from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc };
          this.nodes.get(m.to)?.step(inbound, this.now);
          this.twins.get(m.to)?.step(inbound, this.now);
        }
      }
    }
    throw new Error('the network never went quiet');
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) {
      this.now++;
      for (const n of this.nodes.values()) n.tick(this.now);
      for (const n of this.twins.values()) n.tick(this.now);
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
    expect(rd.messages).toEqual([{ kind: 'peer', to: x?.name, from: y, body: { t: 'fenced', shard: 0, epoch }, pos: expect.any(Number), boot: expect.any(Number), toBoot: expect.any(Number), toInc: expect.any(Number) }]);
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
    // (A member acts only with a boot lease from another member: a heartbeat's bootQ/bootA renews it.)
    net.run(cfg.heartbeatTicks + 2);
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
      expect(n.self.inc).toBeGreaterThan(1);
      expect(n.configOf(0)?.members.some((m) => m.name === y.name && m.inc === 1) ?? false).toBe(false);
      // The new incarnation is durable: replaying its log gives it again.
      const again = new DataNode({ self: y, config: cfg, rand: () => 0.5, peers: members, log: net.logs.get(y.name) as LogRecord[], now: net.now });
      expect(again.self.inc).toBe(n.self.inc);
    }
  });

  it('one principal\'s waiting writes are bounded to a share of the queue: BUSY, not applied, retried once room is made (review-3 R10)', () => {
    const net = started();
    const owner = net.owner();
    const o = net.node(owner);
    const share = queuedPerPrincipalMax(cfg);
    expect(share).toBe(2); // queuedMax 16 / 8
    const s = openSession(net);
    const d = net.ask(owner, { kind: 'open', shard: 0, principal: 'd' });
    const sd = d?.ok && d.kind === 'open' ? d.session : 0;
    const put = (seq: number, value: string, principal = 'c', session = s): ClientOp => ({ kind: 'put', key: 'x', value, ifVersion: null, session, seq, floor: 1, principal });
    // The first write goes in flight; the next `share` wait; one more of the same principal is refused at once.
    for (let seq = 1; seq <= share + 2; seq++) o.step({ kind: 'client', client: 'cl', rid: 1000 + seq, op: put(seq, `c${seq}`) }, net.now);
    const busySeq = share + 2;
    // Another principal still gets into the queue on the same key.
    o.step({ kind: 'client', client: 'cl', rid: 2000, op: put(1, 'd1', 'd', sd) }, net.now);
    net.drain();
    expect(net.replies.get(1000 + busySeq)).toEqual({ ok: false, code: 'BUSY' });
    for (let seq = 1; seq < busySeq; seq++) expect(net.replies.get(1000 + seq)).toMatchObject({ ok: true, kind: 'write', version: seq });
    expect(net.replies.get(2000)).toMatchObject({ ok: true, kind: 'write', version: busySeq });
    // Not applied: d's value is the last one; the same request sent again now applies, once.
    expect(net.ask(owner, { kind: 'get', key: 'x' })).toMatchObject({ found: true, value: 'd1', version: busySeq });
    expect(net.ask(owner, put(busySeq, `c${busySeq}`))).toEqual({ ok: true, kind: 'write', version: busySeq + 1, existed: true });
    expect(net.ask(owner, put(busySeq, `c${busySeq}`))).toEqual({ ok: true, kind: 'write', version: busySeq + 1, existed: true });
  });
});

describe('boots and clones (docs/consistency.md, "Boots and clones")', () => {
  /** A copy of `name`'s durable log at its exact current position, started beside the running original. */
  function cloneOf(net: Net, name: string, broken: boolean): DataNode {
    const m = members.find((x) => x.name === name) as Member;
    let seed = 99;
    const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const c = broken ? { ...cfg, broken: { noBootFence: true } } : cfg;
    const t = new DataNode({ self: m, config: c, rand, peers: members, log: [...(net.logs.get(name) as LogRecord[])], now: net.now });
    net.twins.set(name, t);
    return t;
  }

  function brokenNet(): Net {
    const net = new Net();
    for (const m of members) {
      let seed = 3 + m.name.charCodeAt(0);
      const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
      net.nodes.set(m.name, new DataNode({ self: m, config: { ...cfg, broken: { noBootFence: true } }, rand, peers: members, log: [], genesis, now: 0 }));
    }
    net.run(120);
    return net;
  }

  it('a copy started beside its running original is not admitted: it acts in nothing while the original runs; the original keeps its vote', () => {
    const net = started();
    const owner = net.owner();
    const y = members.find((m) => m.name !== owner) as Member;
    const s = openSession(net);
    expect(net.ask(owner, { kind: 'put', key: 'x', value: 'a', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' })).toMatchObject({ ok: true });
    const t = cloneOf(net, y.name, false);
    expect(t.checkingState).toBe(true);
    // The original keeps talking to its peers, so no peer replaces its boot: the copy is never admitted.
    net.run(cfg.leaseTicks + cfg.proposeTimeoutTicks + 20);
    expect(t.checkingState).toBe(true); // still waiting to be admitted: no vote, acknowledgement, grant or answer
    expect(t.self.inc).toBe(y.inc);
    const orig = net.node(y.name);
    expect(orig.self.inc).toBe(y.inc);
    expect(orig.superseded).toBe(false);
    // The range still works with the original as its member.
    expect(net.ask(net.owner(), { kind: 'put', key: 'x', value: 'b', ifVersion: null, session: s, seq: 2, floor: 2, principal: 'c' })).toMatchObject({ ok: true, version: 2 });
  });

  it('broken (noBootFence): the copy passes the witness check as the same member as its original', () => {
    const net = brokenNet();
    const owner = net.owner();
    const y = members.find((m) => m.name !== owner) as Member;
    const t = cloneOf(net, y.name, true);
    net.run(cfg.leaseTicks + cfg.proposeTimeoutTicks + 20);
    expect(t.checkingState).toBe(false);
    expect(t.self.inc).toBe(y.inc); // two acceptors with one vote
  });

  it('an original silent at every peer for a lease is replaced by its copy, is told so when it speaks, and stops', () => {
    const net = started();
    const owner = net.owner();
    const y = members.find((m) => m.name !== owner) as Member;
    const orig = net.node(y.name);
    // The host hides the original (it keeps running, unheard), and starts the copy.
    net.nodes.delete(y.name);
    const t = cloneOf(net, y.name, false);
    net.run(cfg.leaseTicks + cfg.proposeTimeoutTicks);
    expect(t.checkingState).toBe(false);
    expect(t.self.inc).toBe(y.inc); // admitted by every member: the same member
    // The original comes back into view (and the copy stays): its lease from its peers ran out, and it is refused.
    net.twins.delete(y.name);
    net.nodes.set(`${y.name}-orig`, orig);
    const sent = net.sent.length;
    orig.tick(net.now + 1);
    net.now += 1;
    const rd = orig.ready();
    for (const m of rd.messages) {
      if (m.kind !== 'peer') continue;
      net.nodes.get(m.to)?.step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc }, net.now);
    }
    net.nodes.delete(`${y.name}-orig`);
    net.nodes.set(y.name, t);
    // Peers answer the replaced boot 'superseded' (delivered to it by name: the host's routing), and it stops.
    const toOrig = [...net.nodes.values()].flatMap((n) => n.ready().messages).filter((m) => m.kind === 'peer' && m.to === y.name && m.body.t === 'superseded');
    expect(toOrig.length).toBeGreaterThan(0);
    for (const m of toOrig) if (m.kind === 'peer') orig.step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc }, net.now);
    expect(orig.superseded).toBe(true);
    expect(net.sent.length).toBeGreaterThanOrEqual(sent);
    // The copy serves as the member.
    net.run(cfg.leaseTicks + 40);
    const s = openSession(net);
    expect(net.ask(net.owner(), { kind: 'put', key: 'z', value: 'a', ifVersion: null, session: s, seq: 1, floor: 1, principal: 'c' })).toMatchObject({ ok: true });
  });

  it('a copy whose log went on past the original is behind by boot: the original\'s later position is found', () => {
    const net = started();
    const owner = net.owner();
    const y = members.find((m) => m.name !== owner) as Member;
    const s = openSession(net);
    const copy = [...(net.logs.get(y.name) as LogRecord[])];
    // The copy's own records after the copy (its start mark, witnesses) make its log longer than the original's
    // progress: a position comparison alone would pass it.
    const copyBoot = new DataNode({ self: y, config: cfg, rand: () => 0.25, peers: members, log: copy, now: net.now });
    const own = copyBoot.ready().persist; // its start mark
    expect(own[0]).toMatchObject({ t: 'mark', boot: copyBoot.boot });
    const padded: LogRecord[] = [...copy, ...own, ...Array.from({ length: 50 }, (): LogRecord => ({ t: 'round', shard: 0, round: 0 }))];
    for (let seq = 1; seq <= 3; seq++) net.ask(owner, { kind: 'put', key: 'x', value: `v${seq}`, ifVersion: null, session: s, seq, floor: seq, principal: 'c' });
    // The original stops (its state is dropped: the host keeps the copy's disk); the copy starts from the longer log.
    let seed = 5;
    const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const n = new DataNode({ self: y, config: cfg, rand, peers: members, log: padded, now: net.now });
    net.nodes.set(y.name, n);
    expect(padded.length).toBeGreaterThan((net.logs.get(y.name) as LogRecord[]).length);
    net.run(cfg.leaseTicks + cfg.proposeTimeoutTicks + 20);
    expect(n.checkingState).toBe(false);
    expect(n.self.inc).toBeGreaterThan(y.inc);
  });
});
