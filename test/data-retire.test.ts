// Retirement (docs/consistency.md, "Retirement: leaving for good", B7) on the data core driven by hand: instant
// network and disk, one range of three members and a spare node. The simulator (test/sim-faults.test.ts) runs it
// under faults; these pin the rules one at a time.
import { describe, expect, it } from 'vitest';
import {
  type DataConfig, DataError, DataNode, type LogRecord, type Member, logRecordToWire, peerBodyToWire, validateLogRecord, validatePeerBody,
} from '../enclave/data/index.ts';
import { memberOtherThan, RetireNet, retireCfg, retireMembers, startedNet } from './helpers/retire-net.ts';

const cfg = retireCfg;
const all: Member[] = retireMembers(['a', 'b', 'c', 'd']);
const member = (name: string): Member => all.find((m) => m.name === name) as Member;
type Net = RetireNet;
const started = (config: DataConfig = cfg): Net => startedNet(all, config);

describe('retirement (B7)', () => {
  it('is refused while a configuration naming the node has fewer than three members (its data would go with it)', () => {
    const solo: Member = { name: 'solo', ring: 1n, inc: 1 };
    const n = new DataNode({ self: solo, config: cfg, rand: () => 0.5, peers: [solo], log: [], genesis: [{ shard: 0, epoch: 1, members: [solo] }], now: 0 });
    n.ready();
    expect(n.retire()).toBe(false);
    expect(n.hasRetired).toBe(false);
    expect(n.ready().persist).toEqual([]);
  });

  it('makes its record durable before it says so, then answers nothing; peers remember it durably', () => {
    const net = started();
    const x = memberOtherThan(net, net.owner() as string);
    const core = net.node(x);
    const posBefore = core.position;
    expect(core.retire()).toBe(true);
    const rd = core.ready();
    // The record is in the same ready() as the first message that says it, and persist-then-send makes it durable
    // first; that message's position is past the record.
    expect(rd.persist.map((r) => r.t)).toContain('ret');
    const hbs = rd.messages.filter((m) => m.kind === 'peer' && m.body.t === 'hb');
    expect(hbs.length).toBe(all.length - 1);
    for (const m of hbs) {
      if (m.kind !== 'peer' || m.body.t !== 'hb') continue;
      expect(m.body.ret).toBe(true);
      expect(m.body.configs).toEqual([]);
      expect(m.pos).toBeGreaterThan(posBefore);
    }
    // Deliver them: every peer records the retirement in a witness record.
    net.logs.set(x, [...(net.logs.get(x) ?? []), ...rd.persist]);
    for (const m of rd.messages) if (m.kind === 'peer') net.node(m.to).step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc }, net.now);
    net.drain();
    for (const p of all.filter((m) => m.name !== x)) {
      expect(net.node(p.name).retiredMember(x, 1)).toBe(true);
      const wit = (net.logs.get(p.name) ?? []).filter((r) => r.t === 'wit').flatMap((r) => (r.t === 'wit' ? r.w : []));
      expect(wit.some((w) => w[0] === x && w[2] === 1 && w[6] === 2)).toBe(true);
    }
    // The retired node answers nothing any more: no boot lease, no vote.
    core.step({ kind: 'peer', from: member('a'), body: { t: 'bootQ', t0: net.now }, boot: 1 }, net.now);
    core.step({ kind: 'peer', from: member('a'), body: { t: 'witQ', nonce: 5 }, boot: 1 }, net.now);
    expect(core.ready().messages.filter((m) => m.kind === 'peer' && m.body.t !== 'hb')).toEqual([]);
    // And it is never placed again: the range moves to the spare.
    net.run(200);
    expect(net.members()).not.toContain(`${x}/1`);
    expect(net.members()).toContain('d/1');
  });

  it('a node started from a log that holds its retirement stays retired for good, saying so until it is heard', () => {
    const net = started();
    const x = memberOtherThan(net, net.owner() as string);
    expect(net.node(x).retire()).toBe(true);
    // Crashed right after the record: nobody heard it.
    const log = [...(net.logs.get(x) ?? []), ...net.node(x).ready().persist];
    net.down.add(x);
    net.run(5);
    for (const p of all.filter((m) => m.name !== x)) expect(net.node(p.name).retiredMember(x, 1)).toBe(false);
    const again = net.restart(x, log);
    expect(again.self.inc).toBe(1);
    expect(again.hasRetired).toBe(true); // acts in nothing; says it retired
    expect(again.retirementHeard).toBe(false);
    // (Its peers take this new boot's retiring heartbeat once the old boot has been silent for a lease: B3.)
    net.run(cfg.leaseTicks + 6 * cfg.heartbeatTicks);
    for (const p of all.filter((m) => m.name !== x)) expect(net.node(p.name).retiredMember(x, 1)).toBe(true);
    expect(again.retirementHeard).toBe(true);
    // Never the member again, nor a new one: no new incarnation, no configuration after the range moved.
    net.run(200);
    expect(again.hasRetired).toBe(true);
    expect(again.self.inc).toBe(1);
    expect(net.members()).not.toContain(`${x}/1`);
    expect(again.isActiveOwner(0)).toBe(false);
  });

  it('its retirement is heard only once a co-member of each range naming it echoed it (they persisted it first)', () => {
    const net = started();
    const x = memberOtherThan(net, net.owner() as string);
    const others = all.filter((m) => m.name !== x).map((m) => m.name);
    // Cut off: its retiring heartbeats are lost, so nobody echoes.
    for (const o of others) net.down.add(o);
    expect(net.node(x).retire()).toBe(true);
    net.run(4 * cfg.heartbeatTicks);
    expect(net.node(x).retirementHeard).toBe(false);
    for (const o of others) net.down.delete(o);
    net.run(3 * cfg.heartbeatTicks);
    expect(net.node(x).retirementHeard).toBe(true);
    for (const o of others) {
      const wit = (net.logs.get(o) ?? []).filter((r) => r.t === 'wit').flatMap((r) => (r.t === 'wit' ? r.w : []));
      expect(wit.some((w) => w[0] === x && w[6] === 2)).toBe(true); // heard from the retiring boot: its witnesses held
    }
  });

  it('a copy from before the retirement is told it retired and stays retired (review-8 F4), or is found behind and takes a new incarnation (it cannot come back as the member)', () => {
    const net = started();
    const x = memberOtherThan(net, net.owner() as string);
    const before = [...(net.logs.get(x) ?? [])];
    expect(net.node(x).retire()).toBe(true);
    net.run(5);
    net.down.add(x);
    net.run(cfg.leaseTicks + 10); // the retired boot is silent at its peers for a lease
    const copy = net.restart(x, before);
    expect(copy.self.inc).toBe(1);
    net.run(cfg.leaseTicks + 40);
    expect(copy.checkingState).toBe(false);
    // Told it retired (its peers answer its witQ with gone): retired for good, silent (review-8 F4: a new incarnation
    // would replace the retired witness entry at its peers); or behind (the retiring heartbeat's position): a new one.
    expect(copy.hasRetired || copy.self.inc > 1).toBe(true);
    expect(net.members()).not.toContain(`${x}/1`);
  });

  it('a running node told that its own incarnation retired elsewhere (another boot of it was admitted and retired) fences itself', () => {
    const net = started();
    const x = memberOtherThan(net, net.owner() as string);
    const core = net.node(x);
    core.step({ kind: 'peer', from: member(net.owner() as string), body: { t: 'hb', leaving: false, configs: [], gone: [[x, 1]] } }, net.now);
    expect(core.superseded).toBe(true);
  });

  /**
   * The deadlock of B5 + leave: one member of the range is down; another retires (its range still names it);
   * the first restarts and must be admitted by every other member: the retired one never answers.
   */
  function deadlock(config: DataConfig): { net: Net; y: DataNode; z: string; learnt: number | null } {
    const net = started(config);
    const owner = net.owner() as string;
    const z = memberOtherThan(net, owner); // retires
    const y = memberOtherThan(net, owner, z); // restarts
    net.down.add(y);
    expect(net.node(z).retire()).toBe(true);
    net.run(10);
    net.down.add(z); // stopped for good
    net.run(config.leaseTicks + 10); // y's old boot silent at the owner for a lease: the owner may admit a new one
    const restarted = net.restart(y);
    let learnt: number | null = null;
    for (let i = 0; i < 3 * config.leaseTicks && restarted.checkingState; i++) {
      net.run(1);
      if (learnt === null && restarted.retiredMember(z, 1)) learnt = net.now;
    }
    return { net, y: restarted, z, learnt };
  }

  it('a restarted co-member counts a member known retired for a lease as admitting it, and the range works again', () => {
    const { net, y, z, learnt } = deadlock(cfg);
    expect(learnt).not.toBeNull(); // passed on by the owner's heartbeats (gone)
    expect(y.checkingState).toBe(false);
    expect(y.self.inc).toBe(1); // the same member: its state was good
    // Not before it had known the retirement for a whole lease (B7c).
    expect(net.now - (learnt as number)).toBeGreaterThanOrEqual(cfg.leaseTicks);
    net.run(300);
    const owner = net.owner();
    expect(owner).not.toBeNull();
    expect(net.members()).not.toContain(`${z}/1`);
    const s = net.ask(owner as string, { kind: 'open', shard: 0, principal: 'p' });
    expect(s).toMatchObject({ ok: true, kind: 'open' });
  });

  it('broken (retiredNotCounted): the restarted co-member waits for the retired member for ever', () => {
    const { y } = deadlock({ ...cfg, broken: { retiredNotCounted: true } });
    expect(y.checkingState).toBe(true);
  });

  /**
   * B7c' (seed 130678): the retiring heartbeat reaches only one co-member (y; the owner and the spare are cut off from
   * the retiring node), which so holds its witnesses alone; then the whole range restarts. The owner passes with y's
   * answer (it holds them); y itself has no peer that holds them and needs its own log's copy.
   */
  function soleHolder(config: DataConfig): { net: Net; o: DataNode; y: DataNode; z: string; oName: string; yName: string } {
    const net = started(config);
    const oName = net.owner() as string;
    const z = memberOtherThan(net, oName); // retires
    const yName = memberOtherThan(net, oName, z); // the only one that hears it
    // The owner is cut off from everyone meanwhile (so the range cannot move away from z before the restart), and z
    // reaches only y.
    net.cut = (f, t) => f === oName || t === oName || (f === z && t !== yName) || (t === z && f !== yName);
    expect(net.node(z).retire()).toBe(true);
    net.run(10);
    expect(net.node(z).retirementHeard).toBe(true); // y echoed it: the range naming z has another member that knows
    expect(net.node(yName).configOf(0)?.members.some((m) => m.name === z)).toBe(true);
    net.down.add(z); // stopped for good
    net.cut = () => false;
    // The whole range restarts: both old boots silent for a lease first.
    net.down.add(oName);
    net.down.add(yName);
    net.run(config.leaseTicks + 10);
    const o = net.restart(oName);
    const y = net.restart(yName);
    for (let i = 0; i < 4 * config.leaseTicks && (o.checkingState || y.checkingState); i++) net.run(1);
    return { net, o, y, z, oName, yName };
  }

  it("B7c': the sole holder of a retired member's witnesses counts it as admitting its own restart (seed 130678), and the range works again", () => {
    const { net, o, y, z, yName } = soleHolder(cfg);
    // y's log holds z's witnesses with what z witnessed of y (retired mark 2, then the copy).
    const wit = (net.logs.get(yName) ?? []).filter((r) => r.t === 'wit').flatMap((r) => (r.t === 'wit' ? r.w : []));
    expect(wit.some((w) => w[0] === z && w[6] === 2 && Array.isArray(w[7]))).toBe(true);
    expect(o.checkingState).toBe(false);
    expect(y.checkingState).toBe(false);
    expect(y.self.inc).toBe(1); // the same member: its state was good
    net.run(300);
    const owner = net.owner();
    expect(owner).not.toBeNull();
    expect(net.members()).not.toContain(`${z}/1`);
    expect(net.ask(owner as string, { kind: 'open', shard: 0, principal: 'p' })).toMatchObject({ ok: true, kind: 'open' });
  });

  it("broken (retiredSelfNotCounted, B7c' off): the sole holder's restart waits for the retired member for ever", () => {
    const { o, y } = soleHolder({ ...cfg, broken: { retiredSelfNotCounted: true } });
    expect(o.checkingState).toBe(false); // y's answer holds z's witnesses
    expect(y.checkingState).toBe(true); // nobody's answer does
  });

  it("B7c': the kept copy is checked as the retired member's answer would be: a log behind it takes a new incarnation", () => {
    const net = started();
    const oName = net.owner() as string;
    const z = memberOtherThan(net, oName);
    const yName = memberOtherThan(net, oName, z);
    net.cut = (f, t) => f === oName || t === oName || (f === z && t !== yName) || (t === z && f !== yName);
    expect(net.node(z).retire()).toBe(true);
    net.run(10);
    net.down.add(z);
    net.cut = () => false;
    net.down.add(yName);
    net.run(cfg.leaseTicks + 10);
    // A log whose kept copy says z witnessed y beyond where y's boot's records end in it (as a fork's would).
    const log = (net.logs.get(yName) ?? []).map((r): LogRecord => (r.t !== 'wit' ? r : {
      ...r, w: r.w.map((w) => (w[0] === z && w[6] === 2 && w[7] ? [w[0], w[1], w[2], w[3], w[4], w[5], 2, [w[7][0], w[7][1] + 1000, w[7][2]]] as const : w)),
    }));
    const y = net.restart(yName, log);
    for (let i = 0; i < 4 * cfg.leaseTicks && y.checkingState; i++) net.run(1);
    expect(y.checkingState).toBe(false);
    expect(y.self.inc).toBeGreaterThan(1); // behind: a new member
  });

  it('codec: the retiring heartbeat, the gone list, the ret record and a retired witness round-trip; bad shapes are refused', () => {
    const hb = { t: 'hb' as const, leaving: true, configs: [], ret: true as const, gone: [['n4', 3] as const] };
    expect(validatePeerBody(peerBodyToWire(hb), 4)).toEqual(hb);
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        if (e instanceof DataError) return e.code;
        throw e;
      }
      return 'accepted';
    };
    expect(code(() => validatePeerBody({ t: 'hb', leaving: true, configs: [], ret: false }, 4))).not.toBe('accepted');
    expect(code(() => validatePeerBody({ t: 'hb', leaving: true, configs: [], gone: [['n4']] }, 4))).not.toBe('accepted');
    expect(code(() => validatePeerBody({ t: 'hb', leaving: true, configs: [], gone: Array.from({ length: 5000 }, () => ['n4', 1]) }, 4))).not.toBe('accepted');
    const ret: LogRecord = { t: 'ret', shard: 0, inc: 7 };
    expect(validateLogRecord(logRecordToWire(ret), 4)).toEqual(ret);
    const wit: LogRecord = { t: 'wit', shard: 0, w: [['n4', 10, 3, 5, 5, [], 1], ['n5', 2, 1, 0, 0, []]] };
    expect(validateLogRecord(logRecordToWire(wit), 4)).toEqual(wit);
    expect(code(() => validateLogRecord({ t: 'wit', shard: 0, w: [['n4', 10, 3, 5, 5, [], 3]] }, 4))).not.toBe('accepted');
    // B7c': the retired member's witness of the record's own node, only with retired 2.
    const mine: LogRecord = { t: 'wit', shard: 0, w: [['n4', 10, 3, 5, 5, [], 2, [1, 40, 9]]] };
    expect(validateLogRecord(logRecordToWire(mine), 4)).toEqual(mine);
    expect(code(() => validateLogRecord({ t: 'wit', shard: 0, w: [['n4', 10, 3, 5, 5, [], 1, [1, 40, 9]]] }, 4))).not.toBe('accepted');
    expect(code(() => validateLogRecord({ t: 'wit', shard: 0, w: [['n4', 10, 3, 5, 5, [], 2, [1, 40]]] }, 4))).not.toBe('accepted');
  });
});
