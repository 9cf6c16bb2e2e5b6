// Which node holds which key: pure helpers for the data layer on top of the ring.
// A key k is owned by successor(k), the first node clockwise at or after k, and
// replicated on the owner's next R-1 successors.
import assert from 'node:assert/strict';
import { betweenRightIncl } from './id.ts';
import type { NodeRef } from './messages.ts';

/** Keys a node owns: (start, end] clockwise. `start === end` means the whole ring (a node alone). */
export interface KeyRange {
  readonly start: bigint; // exclusive
  readonly end: bigint; // inclusive
}

/**
 * (predecessor, self]. With no known predecessor the node claims the whole ring:
 * that is right for a ring of one and, during repair, errs towards keeping keys.
 */
export function responsibleRange(predecessor: NodeRef | null, self: NodeRef): KeyRange {
  return { start: predecessor?.id ?? self.id, end: self.id };
}

export function inRange(key: bigint, r: KeyRange): boolean {
  return betweenRightIncl(key, r.start, r.end);
}

/**
 * The R nodes that hold a key: its owner then the owner's successors, without
 * duplicates (a ring smaller than R gives fewer). `ownerSuccessors` is the
 * owner's successor list, e.g. lookup_done.successors.
 */
export function replicaSet(owner: NodeRef, ownerSuccessors: readonly NodeRef[], R: number): NodeRef[] {
  assert.ok(Number.isInteger(R) && R >= 1, 'R must be a positive integer');
  const out: NodeRef[] = [owner];
  const seen = new Set<bigint>([owner.id]);
  for (const s of ownerSuccessors) {
    if (out.length >= R) break;
    if (seen.has(s.id)) continue;
    seen.add(s.id);
    out.push(s);
  }
  return out;
}

/**
 * On a join, the keys the new node takes over from its successor: those in
 * (newNode's predecessor, newNode]. The successor hands these over (and keeps
 * them as a replica while it remains among the first R-1 successors).
 */
export function handoffOnJoin(newNodePredecessor: NodeRef | null, newNode: NodeRef): KeyRange {
  return responsibleRange(newNodePredecessor, newNode);
}

/**
 * The keys a node holds as owner or replica: those owned by itself or by one of
 * its R-1 nearest predecessors, i.e. (p_R, self] with p_1..p_R its predecessors
 * nearest first. Knowing fewer than R predecessors (a small ring) means the whole ring.
 */
export function replicatedRange(predecessorsNearestFirst: readonly NodeRef[], self: NodeRef, R: number): KeyRange {
  assert.ok(Number.isInteger(R) && R >= 1, 'R must be a positive integer');
  const far = predecessorsNearestFirst[R - 1];
  return { start: far?.id ?? self.id, end: self.id };
}
