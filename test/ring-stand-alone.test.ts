// A ring whose every node is joining through another joining node never forms again (a joining node answers no
// lookup): e2e-jepsen row 3's stall, on the pure Chord cores. RingNode.standAlone() lets the one that gives up its
// join be a ring of one, and the others' joins through it (enclave/cluster/rejoin.ts decides who and when) make
// the ring whole again. Checked in the ring simulator (pure cores, seeded).
import { describe, expect, it } from 'vitest';
import type { NodeRef } from '../enclave/ring/messages.ts';
import type { RingNode } from '../enclave/ring/node.ts';
import { runUntilConverged } from './sim/build.ts';
import { makeRefs } from './sim/experiments.ts';
import { makeRng } from './sim/rng.ts';
import { Sim } from './sim/sim.ts';

/** Four nodes of a settled ring all relaunched, each joining through one that is joining too. */
function allJoining(seed: number): { sim: Sim; nodes: RingNode[] } {
  const sim = new Sim({ seed, config: { successorsMax: 4 } });
  const refs = makeRefs(4, makeRng(seed));
  sim.bootstrap(refs);
  sim.runTicks(50);
  sim.killMany(new Set(refs.map((r) => r.id)));
  const nodes = refs.map((r) => sim.addNode(r));
  // As in the failing run: the first relaunched node joined through a node that then died (here: the second,
  // relaunched and joining itself), and the nodes relaunched after it were given its address.
  (nodes[0] as RingNode).join((nodes[1] as RingNode).self);
  for (const n of nodes.slice(1)) n.join((nodes[0] as RingNode).self);
  for (const n of nodes) sim.flush(n);
  return { sim, nodes };
}

describe('a ring stuck joining through itself', () => {
  it('stays joining for good without a node that gives up its join', () => {
    const { sim, nodes } = allJoining(1);
    sim.runTicks(2000);
    expect(nodes.map((n) => n.status)).toEqual(['joining', 'joining', 'joining', 'joining']);
  });

  for (const seed of [1, 2, 3]) {
    it(`forms again once the lowest id stands alone and the others join it (seed ${seed})`, () => {
      const { sim, nodes } = allJoining(seed);
      sim.runTicks(200);
      const lowest = nodes.reduce((a, b) => (a.self.id < b.self.id ? a : b));
      lowest.standAlone();
      expect(lowest.status).toBe('active');
      expect(lowest.successors).toEqual([]);
      sim.flush(lowest);
      for (const n of nodes) {
        if (n === lowest) continue;
        n.join(lowest.self as NodeRef);
        sim.flush(n);
      }
      expect(runUntilConverged(sim, 4000, false), `seed ${seed}`).toBe(true);
      expect(nodes.every((n) => n.status === 'active')).toBe(true);
    });
  }

  it('standAlone is a no-op for a node that is not joining', () => {
    const { sim, nodes } = allJoining(4);
    const n = nodes[0] as RingNode;
    n.standAlone();
    sim.runTicks(5);
    const before = n.status;
    n.standAlone();
    expect(n.status).toBe(before);
  });
});
