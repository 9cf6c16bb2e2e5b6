// What a RingNode reports to its caller through ready().events.
import type { NodeRef } from './messages.ts';

export type LookupMode = 'recursive' | 'iterative';

export type LookupFailure =
  | 'timeout' // no answer within lookupTimeoutTicks
  | 'no_route' // every candidate hop was found dead
  | 'not_joined' // the node is not (or no longer) part of a ring
  | 'busy'; // lookupsInflightMax reached

export type RingEvent =
  | {
      type: 'lookup_done';
      rid: number;
      key: bigint;
      mode: LookupMode;
      owner: NodeRef;
      /** The owner's view at answer time: what the data layer needs to pick replicas. */
      predecessor: NodeRef | null;
      successors: NodeRef[];
      /** Messages that carried the lookup to its owner (path.length - 1). */
      hops: number;
      path: bigint[];
    }
  | { type: 'lookup_failed'; rid: number; key: bigint; mode: LookupMode; reason: LookupFailure }
  | { type: 'joined'; successor: NodeRef }
  | { type: 'left' }
  | { type: 'successors_changed'; successors: NodeRef[] }
  | { type: 'predecessor_changed'; predecessor: NodeRef | null; previous: NodeRef | null }
  | { type: 'peer_suspected'; peer: NodeRef; reason: 'timeout' | 'left' };

/** Why step() dropped a message (counted in RingNode.stats().dropped). */
export type DropReason =
  | 'malformed' // validateRingMessage refused it
  | 'from_self' // a message claiming to come from this node
  | 'not_active' // we are joining or have left
  | 'unexpected' // a reply nobody asked for (late, duplicate, wrong sender)
  | 'hops_exceeded' // lookup forwarded more than hopsMax times
  | 'no_route' // nowhere to forward (every candidate dead)
  | 'busy' // an in-flight table is full
  | 'bad_finger'; // a lookup answer that cannot be finger i (stale or hostile)
