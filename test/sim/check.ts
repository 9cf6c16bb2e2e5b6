// Oracles: how far the simulated ring is from the exact Chord state of its live nodes.
import type { NodeRef } from '../../enclave/ring/messages.ts';
import type { RingNode } from '../../enclave/ring/node.ts';
import { exactFingers } from './bootstrap.ts';
import type { Sim } from './sim.ts';

export interface RingDiff {
  nodes: number;
  wrongSuccessor: number;
  wrongPredecessor: number;
  /** Successor lists that differ from the next min(r, N-1) live nodes. */
  wrongSuccessorList: number;
  /** Finger entries that differ from successor(n + 2^i) (counted only when withFingers). */
  wrongFingers: number;
  notActive: number;
}

export function ringDiff(sim: Sim, withFingers: boolean): RingDiff {
  const sorted = sim.sortedLive();
  const index = new Map<bigint, number>(sorted.map((r, i) => [r.id, i]));
  const n = sorted.length;
  const d: RingDiff = { nodes: n, wrongSuccessor: 0, wrongPredecessor: 0, wrongSuccessorList: 0, wrongFingers: 0, notActive: 0 };
  for (const node of sim.liveNodes()) {
    const k = index.get(node.self.id) as number;
    if (node.status !== 'active') d.notActive++;
    const succ = n > 1 ? sorted[(k + 1) % n] : undefined;
    const pred = n > 1 ? sorted[(k - 1 + n) % n] : undefined;
    if (node.successors[0]?.id !== succ?.id) d.wrongSuccessor++;
    if ((node.predecessor?.id ?? undefined) !== pred?.id) d.wrongPredecessor++;
    if (!listOk(node, sorted, k, sim.config.successorsMax)) d.wrongSuccessorList++;
    if (withFingers) d.wrongFingers += fingerErrors(node, sorted, k);
  }
  return d;
}

function listOk(node: RingNode, sorted: readonly NodeRef[], k: number, r: number): boolean {
  const want = Math.min(r, sorted.length - 1);
  if (node.successors.length !== want) return false;
  for (let j = 0; j < want; j++) if (node.successors[j]?.id !== sorted[(k + j + 1) % sorted.length]?.id) return false;
  return true;
}

function fingerErrors(node: RingNode, sorted: readonly NodeRef[], k: number): number {
  const exact = exactFingers(sorted, k, node.fingers.length);
  let bad = 0;
  for (let i = 0; i < exact.length; i++) if ((node.fingers[i]?.id ?? null) !== (exact[i]?.id ?? null)) bad++;
  return bad;
}

export function converged(d: RingDiff, withFingers: boolean): boolean {
  return d.notActive === 0 && d.wrongSuccessor === 0 && d.wrongPredecessor === 0 && d.wrongSuccessorList === 0
    && (!withFingers || d.wrongFingers === 0);
}
