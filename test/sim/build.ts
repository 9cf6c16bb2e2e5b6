// Building rings the slow, honest way: one join at a time through a random member.
import type { NodeRef } from '../../enclave/ring/messages.ts';
import type { RingNode } from '../../enclave/ring/node.ts';
import { converged, ringDiff } from './check.ts';
import type { Sim } from './sim.ts';

/**
 * Each ref joins through a random member, ticksBetween ticks apart. In an empty
 * simulation the first ref founds the ring (a new node is a ring of one).
 */
export function joinAll(sim: Sim, refs: readonly NodeRef[], ticksBetween: number): RingNode[] {
  const out: RingNode[] = [];
  let rest = refs;
  if (sim.liveNodes().length === 0 && refs.length > 0) {
    out.push(sim.addNode(refs[0] as NodeRef));
    rest = refs.slice(1);
  }
  for (const ref of rest) {
    const members = sim.liveNodes();
    const via = members[sim.rng.int(members.length)] as RingNode;
    const node = sim.addNode(ref);
    node.join(via.self);
    sim.flush(node);
    out.push(node);
    sim.runTicks(ticksBetween);
  }
  return out;
}

/** Runs until the ring is exact (successors, predecessors, lists, and fingers if asked); false on timeout. */
export function runUntilConverged(sim: Sim, maxTicks: number, withFingers: boolean): boolean {
  const end = sim.now + maxTicks * sim.net.unitsPerTick;
  return sim.runUntil(() => sim.ticks % 5 === 0 && converged(ringDiff(sim, withFingers), withFingers), end);
}
