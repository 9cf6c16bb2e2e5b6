// Lease renewals travel together (issue 15, docs/consistency.md "Reads and read leases"): when one of an owner's
// ranges is due to renew its read lease, every active range past half its renewal interval renews in the same
// tick, so an owner asks each member for its leases in one batch per round, not in one tick per range. Instant
// network and disk; the leases' phases are spread by hand first (as ranges activated at different times leave them).
import { describe, expect, it } from 'vitest';
import { type Config, type DataConfig, DataNode, type LogRecord, type Member } from '../enclave/data/index.ts';
import { deliverPeer, drainCores } from './helpers/core-net.ts';

const shards = 16;
const base: DataConfig = {
  replicas: 3, shards, leaseTicks: 100, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 40, heartbeatTicks: 5,
  suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 2, sessionsPerPrincipalMax: 2, windowMax: 4,
  queuedMax: 16,
};
const members: Member[] = ['a', 'b', 'c'].map((name, i) => ({ name, ring: BigInt(i + 1) << 250n, inc: 1 }));
const genesis: Config[] = Array.from({ length: shards }, (_, shard) => ({ shard, epoch: 1, members }));
type Lease = { t0: number; validUntil: number };
type Ranges = Array<{ active: boolean; lease: Lease }>;

function ring(config: DataConfig) {
  let now = 0;
  let seed = 7;
  const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
  const nodes = new Map<string, DataNode>(members.map((m) => [m.name, new DataNode({ self: m, config, rand, peers: members, log: [], genesis, now })]));
  const logs = new Map<string, LogRecord[]>();
  /** Per owner: the ticks in which it sent at least one lease request. */
  const reqTicks = new Map<string, Set<number>>();
  /** Peer messages the host holds back (delivered when `release` is called). */
  let hold: (m: { body: { t: string; shard?: number } }) => boolean = () => false;
  const held: Array<() => void> = [];
  const run = (ticks: number): void => {
    for (let i = 0; i < ticks; i++) {
      now++;
      for (const n of nodes.values()) n.tick(now);
      drainCores(() => nodes, logs, (m) => {
        if (m.kind !== 'peer') return;
        if (m.body.t === 'leaseReq') {
          const s = reqTicks.get(m.from.name) ?? new Set<number>();
          s.add(now);
          reqTicks.set(m.from.name, s);
        }
        if (hold(m as never)) {
          held.push(() => deliverPeer(nodes.get(m.to), m, now));
          return;
        }
        deliverPeer(nodes.get(m.to), m, now);
      });
    }
  };
  const ranges = (name: string): Ranges => (nodes.get(name) as unknown as { ranges: Ranges }).ranges;
  return {
    nodes, run, ranges, reqTicks, now: () => now,
    setHold: (f: typeof hold) => (hold = f),
    release: () => held.splice(0).forEach((d) => d()),
  };
}

function leaseRequestTicks(config: DataConfig): { owned: number; ticks: number; rounds: number; leased: boolean } {
  const r = ring(config);
  r.run(300); // formed: every range has an active, leased owner
  // Spread the phases of the owners' renewals over one interval, as ranges activated at different times leave them.
  let owned = 0;
  for (const m of members) {
    const mine = r.ranges(m.name).filter((x) => x.active);
    mine.forEach((x, i) => (x.lease.t0 = r.now() - Math.floor((i * config.renewTicks) / Math.max(1, mine.length))));
    owned = Math.max(owned, mine.length);
  }
  r.run(2 * config.renewTicks); // let them converge
  r.reqTicks.clear();
  const rounds = 5;
  r.run(rounds * config.renewTicks);
  const ticks = Math.max(...members.map((m) => r.reqTicks.get(m.name)?.size ?? 0));
  const leased = members.every((m) => r.ranges(m.name).every((x) => !x.active || x.lease.validUntil > r.now()));
  return { owned, ticks, rounds, leased };
}

describe('lease renewals', () => {
  it('an owner asks for all its ranges\' leases in one tick per renewal round once the phases converge', () => {
    const { owned, ticks, rounds, leased } = leaseRequestTicks(base);
    expect(owned).toBeGreaterThanOrEqual(4); // the spread means something: several ranges per owner
    expect(leased).toBe(true); // and every lease is still valid
    expect(ticks).toBeLessThanOrEqual(rounds + 2);
  });

  it('control: renewing range by range (renewApart) takes a tick per range and round', () => {
    const { owned, ticks, rounds } = leaseRequestTicks({ ...base, broken: { renewApart: true } });
    expect(ticks).toBeGreaterThan(rounds + 2);
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(owned * (rounds - 1)));
  });

  it('a range whose grants are still on their way is not renewed early (an early round would void them)', () => {
    const r = ring(base);
    r.run(300);
    const owner = members.find((m) => r.ranges(m.name).filter((x) => x.active).length >= 2) as Member;
    const mine = r.ranges(owner.name).map((x, shard) => ({ x, shard })).filter(({ x }) => x.active);
    const [slow, other] = mine as unknown as [{ x: { lease: Lease }; shard: number }, { x: { lease: Lease }; shard: number }];
    // slow starts a round whose grants the host holds; other comes due 25 ticks later, slow then past half its interval.
    r.setHold((m) => m.body.t === 'leaseGrant' && m.body.shard === slow.shard);
    (r.nodes.get(owner.name) as unknown as { renewLease: (x: unknown) => void }).renewLease(slow.x);
    const t0 = slow.x.lease.t0;
    other.x.lease.t0 = r.now() - base.renewTicks + 25;
    r.run(30);
    expect(other.x.lease.t0).toBeGreaterThan(t0); // the round happened
    expect(slow.x.lease.t0).toBe(t0); // and left slow's pending round alone
    r.setHold(() => false);
    r.release();
    r.run(1);
    expect(slow.x.lease.validUntil).toBeGreaterThan(r.now()); // its grants, late, still count
  });
});
