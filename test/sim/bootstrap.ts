// bootstrapFromSortedIds: the routing state a converged Chord ring would have,
// computed directly from the sorted identifier list. The simulator uses it to
// build 10,000-node rings without simulating 10,000 joins; it then runs real
// stabilization rounds on top, and rings built by joins are shown (run.ts,
// test/ring-converge.test.ts) to reach the same state and path lengths.
import { betweenRightIncl, fingerStart } from '../../enclave/ring/id.ts';
import type { NodeRef } from '../../enclave/ring/messages.ts';

export interface SeedState {
  predecessor: NodeRef | null;
  successors: NodeRef[];
  fingers: Array<NodeRef | null>;
}

/** Index of the first ref with id >= x, wrapping to 0 (i.e. successor(x)). */
export function successorIndex(sorted: readonly NodeRef[], x: bigint): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((sorted[mid] as NodeRef).id < x) lo = mid + 1;
    else hi = mid;
  }
  return lo === sorted.length ? 0 : lo;
}

/** The exact finger table of sorted[k]: finger[i] = successor(id + 2^i), null where that is itself. */
export function exactFingers(sorted: readonly NodeRef[], k: number, fingerBits: number): Array<NodeRef | null> {
  const self = sorted[k] as NodeRef;
  const out = new Array<NodeRef | null>(fingerBits).fill(null);
  let owner: NodeRef | null = null;
  for (let i = 0; i < fingerBits; i++) {
    const start = fingerStart(self.id, i);
    // Consecutive fingers mostly share an owner: reuse it while the start stays in (self, owner].
    if (owner === null || !betweenRightIncl(start, self.id, owner.id)) {
      owner = sorted[successorIndex(sorted, start)] as NodeRef;
    }
    out[i] = owner.id === self.id ? null : owner;
  }
  return out;
}

export function bootstrapFromSortedIds(sorted: readonly NodeRef[], successorsMax: number, fingerBits: number): SeedState[] {
  const n = sorted.length;
  for (let k = 1; k < n; k++) {
    if (!((sorted[k - 1] as NodeRef).id < (sorted[k] as NodeRef).id)) throw new Error('ids must be sorted and distinct');
  }
  return sorted.map((_, k) => {
    const successors: NodeRef[] = [];
    for (let j = 1; j <= Math.min(successorsMax, n - 1); j++) successors.push(sorted[(k + j) % n] as NodeRef);
    const predecessor = n > 1 ? (sorted[(k - 1 + n) % n] as NodeRef) : null;
    return { predecessor, successors, fingers: exactFingers(sorted, k, fingerBits) };
  });
}
