// A restarted member alone on the Chord ring rejoins through its sealed neighbours (enclave/cluster/rejoin.ts):
// the driver part of the fix for jepsen row 4's stall (the founder restarted after the others had no join
// address; the real-process check is test/e2e-jepsen.test.ts row 4, which restarts the founder after the others).
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { aloneOnRing, rejoinWhenAlone } from '../enclave/cluster/rejoin.ts';
import { fakeRing, idBytes, type Ref, until } from './helpers/fake-ring.ts';


const logger = pino({ level: 'silent' });
/** A peer's status: active on a ring with another node (id 8). */
const activeWithSuccessor = { ring: 'active', successors: [{ id: idBytes(8n), addr: 'h:1' }] };
const stops: Array<() => void> = [];
afterEach(() => {
  for (const s of stops.splice(0)) s();
});

describe('rejoin when alone', () => {
  const self = { id: 1n, addr: 'a:1' };

  it('knows alone from a view that names only this node', () => {
    const { ring, driver } = fakeRing(self);
    expect(aloneOnRing(driver)).toBe(true);
    ring.core.successors = [self];
    expect(aloneOnRing(driver)).toBe(true);
    ring.core.predecessor = { id: 9n, addr: 'b:1' };
    expect(aloneOnRing(driver)).toBe(false);
    ring.core.predecessor = null;
    ring.core.successors = [{ id: 9n, addr: 'b:1' }];
    expect(aloneOnRing(driver)).toBe(false);
    ring.core.successors = [];
    ring.core.status = 'joining'; // a join in progress is not "alone"
    expect(aloneOnRing(driver)).toBe(false);
  });

  it('joins through the first sealed neighbour that answers, skipping dead ones and itself', async () => {
    const { joins, driver } = fakeRing(self);
    const asked: string[] = [];
    const peers = {
      identify: async (addr: string): Promise<bigint> => {
        asked.push(addr);
        if (addr === 'dead:1') throw new Error('connect ECONNREFUSED');
        return addr === 'c:1' ? 3n : 2n;
      },
      call: async () => activeWithSuccessor,
    };
    stops.push(rejoinWhenAlone({ ring: driver, peers, candidates: () => ['a:1', 'dead:1', 'c:1', 'b:1'], logger, everyMs: 5, aloneMs: 20 }).stop);
    await until(() => joins.length > 0);
    expect(joins).toEqual([{ id: 3n, addr: 'c:1' }]);
    expect(asked).toEqual(['dead:1', 'c:1']); // never itself
    // No longer alone: nothing more.
    await new Promise((r) => setTimeout(r, 60));
    expect(joins).toHaveLength(1);
  });

  it('does nothing while the node has neighbours, or with no candidates', async () => {
    const a = fakeRing(self);
    a.ring.core.successors = [{ id: 5n, addr: 'e:1' }];
    let asked = 0;
    const peers = { identify: async () => { asked++; return 7n; }, call: async () => activeWithSuccessor };
    stops.push(rejoinWhenAlone({ ring: a.driver, peers, candidates: () => ['x:1'], logger, everyMs: 5, aloneMs: 10 }).stop);
    const b = fakeRing(self);
    stops.push(rejoinWhenAlone({ ring: b.driver, peers, candidates: () => [], logger, everyMs: 5, aloneMs: 10 }).stop);
    await new Promise((r) => setTimeout(r, 80));
    expect(asked).toBe(0);
    expect(a.joins).toEqual([]);
    expect(b.joins).toEqual([]);
  });

  it('a node stuck joining (its join address down or joining too) tries its sealed neighbours in turn', async () => {
    const { ring, joins, driver } = fakeRing(self);
    ring.core.status = 'joining';
    ring.rejoin = (via: Ref) => void joins.push(via); // still joining: the next attempt moves on
    const peers = { identify: async (addr: string) => (addr === 'b:1' ? 2n : 3n), call: async () => ({ ring: 'active', successors: [] }) };
    stops.push(rejoinWhenAlone({ ring: driver, peers, candidates: () => ['b:1', 'c:1'], logger, everyMs: 5, aloneMs: 5, joiningMs: 20 }).stop);
    await until(() => joins.length >= 2);
    expect(joins.slice(0, 2)).toEqual([{ id: 2n, addr: 'b:1' }, { id: 3n, addr: 'c:1' }]);
  });

  it('never through a node that is joining itself; of two lone nodes only the higher id joins the lower', async () => {
    const hi = fakeRing({ id: 50n, addr: 'hi:1' });
    const lo = fakeRing({ id: 10n, addr: 'lo:1' });
    const statusOf = (r: ReturnType<typeof fakeRing>) => ({ ring: r.ring.core.status, successors: r.ring.core.successors.map((x) => ({ id: idBytes(x.id), addr: x.addr })) });
    const joining = fakeRing({ id: 30n, addr: 'j:1' });
    joining.ring.core.status = 'joining';
    const ids: Record<string, ReturnType<typeof fakeRing>> = { 'hi:1': hi, 'lo:1': lo, 'j:1': joining };
    const peers = {
      identify: async (addr: string) => (ids[addr] as ReturnType<typeof fakeRing>).ring.self.id,
      call: async (addr: string) => statusOf(ids[addr] as ReturnType<typeof fakeRing>),
    };
    stops.push(rejoinWhenAlone({ ring: hi.driver, peers, candidates: () => ['j:1', 'lo:1'], logger, everyMs: 5, aloneMs: 10 }).stop);
    stops.push(rejoinWhenAlone({ ring: lo.driver, peers, candidates: () => ['j:1', 'hi:1'], logger, everyMs: 5, aloneMs: 10 }).stop);
    await until(() => hi.joins.length > 0);
    await new Promise((r) => setTimeout(r, 60));
    expect(hi.joins).toEqual([{ id: 10n, addr: 'lo:1' }]);
    expect(lo.joins).toEqual([]);
  });

  it('a peer that turns out to be this node (the host pointing it at itself) is not joined through', async () => {
    const { joins, driver } = fakeRing(self);
    let asked = 0;
    const peers = { identify: async () => { asked++; return 1n; }, call: async () => activeWithSuccessor }; // the attested id is our own
    stops.push(rejoinWhenAlone({ ring: driver, peers, candidates: () => ['mirror:1'], logger, everyMs: 5, aloneMs: 5 }).stop);
    await until(() => asked >= 2);
    expect(asked).toBeGreaterThanOrEqual(2); // it keeps trying, at its pace
    expect(joins).toEqual([]);
  });
});
