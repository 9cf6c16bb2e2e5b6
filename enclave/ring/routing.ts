// Pure helpers of the ring core: the successor-list order, closest_preceding_node,
// and the one routing decision shared by recursive and iterative lookups.
import assert from 'node:assert/strict';
import { betweenOpen, betweenRightIncl, distance, floorLog2 } from './id.ts';
import type { NodeRef } from './messages.ts';

/**
 * Candidates -> a valid successor list for self: self dropped, duplicates
 * dropped, sorted clockwise from self, at most max entries. Peers' lists are
 * untrusted, so they always pass through here before being stored.
 */
export function orderSuccessors(self: bigint, candidates: readonly NodeRef[], max: number): NodeRef[] {
  const seen = new Set<bigint>();
  const keep: Array<{ d: bigint; n: NodeRef }> = [];
  for (const n of candidates) {
    if (n.id === self || seen.has(n.id)) continue;
    seen.add(n.id);
    keep.push({ d: distance(self, n.id), n });
  }
  keep.sort((a, b) => (a.d < b.d ? -1 : a.d > b.d ? 1 : 0));
  return keep.slice(0, max).map((e) => e.n);
}

/** The invariant: strictly clockwise from self, no self, no duplicates, at most max. */
export function assertSuccessorOrder(self: bigint, list: readonly NodeRef[], max: number): void {
  assert.ok(list.length <= max, 'successor list over its maximum');
  let prev = 0n;
  for (const n of list) {
    const d = distance(self, n.id);
    assert.ok(d > prev, 'successor list not in ring order (or contains self/duplicate)');
    prev = d;
  }
}

export interface RoutingTable {
  readonly self: NodeRef;
  readonly predecessor: NodeRef | null;
  readonly successors: readonly NodeRef[];
  readonly fingers: ReadonlyArray<NodeRef | null>;
}

/**
 * closest_preceding_node(key) over fingers and successor list, skipping excluded
 * ids: the known node in (self, key) closest to key, or null. The finger scan
 * starts at floor(log2(key - self)): a correct finger above that index lies at
 * or past key, so it cannot precede key.
 */
export function closestPreceding(t: RoutingTable, key: bigint, exclude: ReadonlySet<bigint> | null): NodeRef | null {
  const self = t.self.id;
  const d = distance(self, key);
  if (d === 0n) return null;
  let best: NodeRef | null = null;
  for (let i = Math.min(floorLog2(d), t.fingers.length - 1); i >= 0; i--) {
    const f = t.fingers[i];
    if (f && f.id !== self && betweenOpen(f.id, self, key) && !exclude?.has(f.id)) {
      best = f;
      break;
    }
  }
  for (let i = t.successors.length - 1; i >= 0; i--) {
    const s = t.successors[i] as NodeRef;
    if (!betweenOpen(s.id, self, key) || exclude?.has(s.id)) continue;
    if (best === null || distance(self, s.id) > distance(self, best.id)) best = s;
    break;
  }
  return best;
}

export type Route =
  | { kind: 'owner' }
  | { kind: 'forward'; to: NodeRef; final: boolean }
  | { kind: 'none' };

/**
 * The routing decision at one node. `final` means the sender believed key is
 * in (sender, self]: self confirms ownership unless its predecessor sits
 * between, in which case the lookup steps back to that predecessor.
 */
export function route(t: RoutingTable, key: bigint, final: boolean, exclude: ReadonlySet<bigint> | null): Route {
  const self = t.self.id;
  const pred = t.predecessor;
  if (key === self) return { kind: 'owner' };
  if (pred !== null && betweenRightIncl(key, pred.id, self)) return { kind: 'owner' };
  if (final) {
    // Ownership is decided by the predecessor slot alone, never by `exclude`: a
    // predecessor that merely timed out once may be alive and own the key. It is
    // retried until suspectAfterMisses clears the slot; a wrong owner is worse
    // than a slower or failed lookup.
    if (pred === null) return { kind: 'owner' };
    return { kind: 'forward', to: pred, final: true };
  }
  const live = t.successors.filter((s) => !exclude?.has(s.id));
  const first = live[0];
  if (t.successors.length === 0) return { kind: 'owner' }; // alone on the ring
  if (first === undefined) return { kind: 'none' };
  // Successors are clockwise, so key in (self, first live successor] means it owns key
  // unless an excluded (dead) one before it did: then the live one inherits the key.
  if (betweenRightIncl(key, self, first.id)) return { kind: 'forward', to: first, final: true };
  const next = closestPreceding(t, key, exclude);
  if (next !== null) return { kind: 'forward', to: next, final: false };
  return { kind: 'forward', to: first, final: false };
}
