// Ring messages: plain objects with bigint identifiers. The lead's codec carries
// an identifier as a 32-byte big-endian byte string; validateRingMessage accepts
// either form (bigint or 32-byte Uint8Array) and always returns bigints.
//
// Every message names its sender in `from`. The transport must check that
// `from.id` equals nodeIdFromPublicKey(the peer's attested key) before step():
// the core cannot authenticate anyone by itself.
import { addrCharsMax, excludeMax, hopsMax, idBytes, requestIdMax, successorsMax } from './constants.ts';
import { RingError } from './errors.ts';
import { idFromBytes, isId } from './id.ts';

export interface NodeRef {
  readonly id: bigint;
  /** Opaque to the core: whatever the transport needs to reach the node. */
  readonly addr: string;
}

/** Recursive lookup, forwarded hop by hop; each hop is acknowledged to its sender. */
export interface FindSuccessor {
  type: 'find_successor';
  from: NodeRef;
  origin: NodeRef;
  rid: number; // the origin's lookup id
  hopId: number; // the sender's id for this forward, echoed by the ack
  key: bigint;
  /** The sender believes key is in (sender, receiver]: the receiver should confirm it owns key. */
  final: boolean;
  path: bigint[]; // node ids that handled the lookup so far, origin first (hops = path.length - 1)
}
export interface FindSuccessorAck { type: 'find_successor_ack'; from: NodeRef; hopId: number }
/** The owner's answer to a recursive lookup, sent straight to the origin. */
export interface Found {
  type: 'found';
  from: NodeRef; // the owner
  rid: number;
  key: bigint;
  path: bigint[]; // origin first, owner last
  predecessor: NodeRef | null;
  successors: NodeRef[];
}
/** One step of an iterative lookup: "what do you know about key?" */
export interface ClosestPreceding {
  type: 'closest_preceding';
  from: NodeRef;
  rid: number;
  key: bigint;
  final: boolean; // as in FindSuccessor
  exclude: bigint[]; // nodes the asker found dead: do not name them
}
export interface ClosestPrecedingReply {
  type: 'closest_preceding_reply';
  from: NodeRef;
  rid: number;
  key: bigint;
  /** owner: I own key; successor: next owns it (ask it to confirm); next: ask next. */
  result: 'owner' | 'successor' | 'next';
  next: NodeRef | null;
  predecessor: NodeRef | null;
  successors: NodeRef[];
}
export interface GetPredecessor { type: 'get_predecessor'; from: NodeRef; rid: number }
/** Carries the successor list too, so stabilize costs one round trip, not two. */
export interface PredecessorReply {
  type: 'predecessor_reply';
  from: NodeRef;
  rid: number;
  predecessor: NodeRef | null;
  successors: NodeRef[];
}
export interface Notify { type: 'notify'; from: NodeRef }
export interface Ping { type: 'ping'; from: NodeRef; rid: number }
export interface Pong { type: 'pong'; from: NodeRef; rid: number }
/** Graceful leave: tells the neighbours how to close the gap. */
export interface Leave { type: 'leave'; from: NodeRef; predecessor: NodeRef | null; successors: NodeRef[] }

export type RingMessage =
  | FindSuccessor | FindSuccessorAck | Found | ClosestPreceding | ClosestPrecedingReply
  | GetPredecessor | PredecessorReply | Notify | Ping | Pong | Leave;

export type RingMessageType = RingMessage['type'];

// ---- validation (hostile input: RingError, never an assertion) ----

type Obj = Record<string, unknown>;

function obj(x: unknown, what: string): Obj {
  if (typeof x !== 'object' || x === null || Array.isArray(x) || x instanceof Uint8Array) {
    throw new RingError('MALFORMED', `${what} must be an object`);
  }
  return x as Obj;
}

function id(x: unknown, what: string): bigint {
  if (typeof x === 'bigint') {
    if (!isId(x)) throw new RingError('BAD_ID', `${what} out of range`);
    return x;
  }
  if (x instanceof Uint8Array) {
    if (x.length !== idBytes) throw new RingError('BAD_ID', `${what} must be ${idBytes} bytes`);
    return idFromBytes(x);
  }
  throw new RingError('BAD_ID', `${what} must be a bigint or ${idBytes} bytes`);
}

function uint(x: unknown, what: string, max: number): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) {
    throw new RingError('MALFORMED', `${what} must be a non-negative integer`);
  }
  if (x > max) throw new RingError('TOO_LONG', `${what} over ${max}`);
  return x;
}

function bool(x: unknown, what: string): boolean {
  if (typeof x !== 'boolean') throw new RingError('MALFORMED', `${what} must be a boolean`);
  return x;
}

function nodeRef(x: unknown, what: string): NodeRef {
  const o = obj(x, what);
  if (typeof o.addr !== 'string') throw new RingError('MALFORMED', `${what}.addr must be a string`);
  if (o.addr.length > addrCharsMax) throw new RingError('TOO_LONG', `${what}.addr over ${addrCharsMax}`);
  return { id: id(o.id, `${what}.id`), addr: o.addr };
}

function nodeRefOrNull(x: unknown, what: string): NodeRef | null {
  return x === null || x === undefined ? null : nodeRef(x, what);
}

/** Length is checked before any element is looked at. */
function list<T>(x: unknown, what: string, max: number, each: (v: unknown, w: string) => T): T[] {
  if (!Array.isArray(x)) throw new RingError('MALFORMED', `${what} must be an array`);
  if (x.length > max) throw new RingError('TOO_LONG', `${what} over ${max} entries`);
  return x.map((v, i) => each(v, `${what}[${i}]`));
}

const rid = (o: Obj): number => uint(o.rid, 'rid', requestIdMax);
const from = (o: Obj): NodeRef => nodeRef(o.from, 'from');
const succs = (o: Obj): NodeRef[] => list(o.successors, 'successors', successorsMax, nodeRef);
const path = (o: Obj): bigint[] => list(o.path, 'path', hopsMax + 1, id);

const parsers: { [K in RingMessageType]: (o: Obj) => Extract<RingMessage, { type: K }> } = {
  find_successor: (o) => ({
    type: 'find_successor', from: from(o), origin: nodeRef(o.origin, 'origin'), rid: rid(o),
    hopId: uint(o.hopId, 'hopId', requestIdMax), key: id(o.key, 'key'), final: bool(o.final, 'final'),
    path: path(o),
  }),
  find_successor_ack: (o) => ({ type: 'find_successor_ack', from: from(o), hopId: uint(o.hopId, 'hopId', requestIdMax) }),
  found: (o) => ({
    type: 'found', from: from(o), rid: rid(o), key: id(o.key, 'key'),
    path: path(o), predecessor: nodeRefOrNull(o.predecessor, 'predecessor'), successors: succs(o),
  }),
  closest_preceding: (o) => ({
    type: 'closest_preceding', from: from(o), rid: rid(o), key: id(o.key, 'key'), final: bool(o.final, 'final'),
    exclude: list(o.exclude, 'exclude', excludeMax, id),
  }),
  closest_preceding_reply: (o) => {
    const result = o.result;
    if (result !== 'owner' && result !== 'successor' && result !== 'next') {
      throw new RingError('MALFORMED', 'result must be owner, successor or next');
    }
    const next = nodeRefOrNull(o.next, 'next');
    if (result !== 'owner' && next === null) throw new RingError('MALFORMED', `result ${result} needs next`);
    return {
      type: 'closest_preceding_reply', from: from(o), rid: rid(o), key: id(o.key, 'key'), result, next,
      predecessor: nodeRefOrNull(o.predecessor, 'predecessor'), successors: succs(o),
    };
  },
  get_predecessor: (o) => ({ type: 'get_predecessor', from: from(o), rid: rid(o) }),
  predecessor_reply: (o) => ({
    type: 'predecessor_reply', from: from(o), rid: rid(o),
    predecessor: nodeRefOrNull(o.predecessor, 'predecessor'), successors: succs(o),
  }),
  notify: (o) => ({ type: 'notify', from: from(o) }),
  ping: (o) => ({ type: 'ping', from: from(o), rid: rid(o) }),
  pong: (o) => ({ type: 'pong', from: from(o), rid: rid(o) }),
  leave: (o) => ({
    type: 'leave', from: from(o), predecessor: nodeRefOrNull(o.predecessor, 'predecessor'), successors: succs(o),
  }),
};

/**
 * Type-checks a decoded message and returns a normalized copy (ids as bigint,
 * unknown fields dropped). Throws RingError on anything else.
 */
export function validateRingMessage(x: unknown): RingMessage {
  const o = obj(x, 'message');
  const t = o.type;
  if (typeof t !== 'string' || !Object.hasOwn(parsers, t)) {
    throw new RingError('UNKNOWN_TYPE', `unknown message type ${typeof t === 'string' ? t.slice(0, 40) : typeof t}`);
  }
  return parsers[t as RingMessageType](o);
}
