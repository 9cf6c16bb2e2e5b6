// Two Chord rings of one deployment merge once one node of one joins through a node of the other (the merge rule
// of enclave/cluster/rejoin.ts, review-5 J2): its former ring-mates still point at it, and stabilize interleaves
// the two rings into one. Checked in the ring simulator (pure cores, seeded): exact successors, predecessors and
// lists over all nodes afterwards, also when one node of each ring acts at once. Without the join (the broken
// case), the two rings stay apart: the same check fails.
import { describe, expect, it } from 'vitest';
import type { NodeRef } from '../enclave/ring/messages.ts';
import type { RingNode } from '../enclave/ring/node.ts';
import { runUntilConverged } from './sim/build.ts';
import { converged, ringDiff } from './sim/check.ts';
import { makeRefs } from './sim/experiments.ts';
import { makeRng } from './sim/rng.ts';
import { Sim } from './sim/sim.ts';

/** A ring of `refs` formed on its own: the first alone, the others joining through it. */
function ringOf(sim: Sim, refs: readonly NodeRef[]): RingNode[] {
  const first = sim.addNode(refs[0] as NodeRef);
  const out = [first];
  for (const r of refs.slice(1)) {
    const n = sim.addNode(r);
    n.join(first.self);
    sim.flush(n);
    out.push(n);
    sim.runTicks(2);
  }
  return out;
}

/** Successor walk from `n`: the nodes it reaches. */
function walk(sim: Sim, n: RingNode): number {
  const byId = new Map(sim.liveNodes().map((x) => [x.self.id, x]));
  const seen = new Set<bigint>();
  let cur: RingNode | undefined = n;
  while (cur && !seen.has(cur.self.id)) {
    seen.add(cur.self.id);
    cur = cur.successors[0] ? byId.get(cur.successors[0].id) : undefined;
  }
  return seen.size;
}

function twoRings(seed: number, a: number, b: number): { sim: Sim; ra: RingNode[]; rb: RingNode[] } {
  const sim = new Sim({ seed, config: { successorsMax: 4 } });
  const refs = makeRefs(a + b, makeRng(seed));
  const ra = ringOf(sim, refs.slice(0, a));
  const rb = ringOf(sim, refs.slice(a));
  sim.runTicks(400); // each ring settles on its own (no pointer crosses)
  expect(walk(sim, ra[0] as RingNode), `seed ${seed}: ring A formed`).toBe(a);
  expect(walk(sim, rb[0] as RingNode), `seed ${seed}: ring B formed`).toBe(b);
  return { sim, ra, rb };
}

describe('two rings merge after one join across', () => {
  for (const [a, b, seed] of [[2, 2, 1], [3, 2, 2], [4, 4, 3], [6, 3, 4], [8, 5, 5], [5, 1, 6]] as const) {
    it(`${a} + ${b} nodes (seed ${seed})`, () => {
      const { sim, ra, rb } = twoRings(seed, a, b);
      const x = ra[ra.length - 1] as RingNode;
      x.join((rb[0] as RingNode).self);
      sim.flush(x);
      expect(runUntilConverged(sim, 4000, false), `seed ${seed}: ${JSON.stringify(ringDiff(sim, false), (_k, v) => (typeof v === 'bigint' ? v.toString(16).slice(0, 6) : v))}`).toBe(true);
      expect(walk(sim, ra[0] as RingNode)).toBe(a + b);
    });
  }

  it('one node of each ring acting at once still ends as one ring', () => {
    for (const seed of [11, 12, 13]) {
      const { sim, ra, rb } = twoRings(seed, 4, 3);
      const x = ra[1] as RingNode;
      const y = rb[1] as RingNode;
      x.join((rb[0] as RingNode).self);
      y.join((ra[0] as RingNode).self);
      sim.flush(x);
      sim.flush(y);
      expect(runUntilConverged(sim, 4000, false), `seed ${seed}`).toBe(true);
      expect(walk(sim, ra[0] as RingNode)).toBe(7);
    }
  });

  it('without a join across, the two rings stay apart (what the merge rule is for)', () => {
    const { sim, ra } = twoRings(3, 4, 4);
    sim.runTicks(2000);
    expect(converged(ringDiff(sim, false), false)).toBe(false);
    expect(walk(sim, ra[0] as RingNode)).toBe(4);
  });
});
