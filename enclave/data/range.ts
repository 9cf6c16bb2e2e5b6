// One range's state at one node, and the pure functions that change it from
// log records. Replaying a node's log through applyRecord gives exactly the
// state the live node had when those records were made durable.
import type { Ballot, Config, Entry, LogRecord, RangeData, Session, Sessions, WriteOp } from './types.ts';
import { newer, sessionCounter } from './types.ts';

export interface Inflight {
  readonly opId: number;
  readonly key: string;
  readonly op: WriteOp;
  /** The answer, sent once every member has acknowledged. */
  readonly result: import('./types.ts').ClientResult;
  /** The entry readers see until every member has acknowledged. */
  readonly prev: Entry | undefined;
  readonly acks: Set<string>;
  readonly replies: Array<{ client: string; rid: number }>;
  sentAt: number;
  /** "session:seq" when the write carries a request id. */
  readonly reqKey: string | null;
  /** requestDigest() of the write ('' for an open). */
  readonly digest: string;
}

export interface Pending {
  readonly client: string;
  readonly rid: number;
  readonly op: import('./types.ts').ClientOp;
}

export interface Proposal {
  readonly base: Config;
  readonly ballot: Ballot;
  readonly desired: readonly import('./types.ts').Member[];
  phase: 'prepare' | 'install' | 'accept';
  readonly promises: Map<string, { accepted: { ballot: Ballot; value: Config } | null; data: RangeData; sessions: Sessions }>;
  value: Config | null;
  data: RangeData | null;
  sessions: Sessions | null;
  readonly acks: Set<string>;
  readonly startedAt: number;
  sentAt: number;
}

export interface RangeState {
  readonly shard: number;
  // Durable (rebuilt from the log).
  config: Config | null;
  synced: boolean;
  promised: Ballot | null;
  accepted: { ballot: Ballot; value: Config } | null;
  install: { instance: number; ballot: Ballot } | null;
  round: number;
  data: RangeData;
  sessions: Sessions;
  /** Bytes of keys and values in `data` (kept with it). */
  bytes: number;
  // Memory only.
  leaseUntil: number;
  active: boolean;
  activating: { acks: Set<string>; startedAt: number; sentAt: number } | null;
  lease: { validUntil: number; t0: number; grants: Set<string> };
  inflight: Map<string, Inflight>;
  queues: Map<string, Pending[]>;
  queued: number;
  byReq: Map<string, Inflight>;
  proposal: Proposal | null;
  nextTry: number;
  /** Owner only: when each session was last used here (opened, or a write of it received), on the owner's clock. */
  lastUse: Map<number, number>;
  /** Owner only: when this node became the range's active owner (sessions it has not seen used count as used then). */
  activeAt: number;
}

export function emptySessions(): Sessions {
  return { next: 1, clock: 0, table: new Map() };
}

export function newRange(shard: number): RangeState {
  return {
    shard, config: null, synced: false, promised: null, accepted: null, install: null, round: 0,
    data: new Map(), sessions: emptySessions(), bytes: 0,
    leaseUntil: -Infinity, active: false, activating: null, lease: { validUntil: -Infinity, t0: -Infinity, grants: new Set() },
    inflight: new Map(), queues: new Map(), queued: 0, byReq: new Map(), proposal: null, nextTry: 0,
    lastUse: new Map(), activeAt: 0,
  };
}

export function cloneSessions(s: Sessions): Sessions {
  const table = new Map<number, Session>();
  for (const [id, x] of s.table) table.set(id, { owner: x.owner, floor: x.floor, used: x.used, results: new Map(x.results) });
  return { next: s.next, clock: s.clock, table };
}

/** Per key the greatest (epoch, version); sessions by union (the greater floor, every result kept). */
export function mergeInto(data: RangeData, sessions: Sessions, fromData: RangeData, fromSessions: Sessions): void {
  for (const [k, e] of fromData) if (newer(e, data.get(k))) data.set(k, e);
  sessions.next = Math.max(sessions.next, fromSessions.next);
  sessions.clock = Math.max(sessions.clock, fromSessions.clock);
  for (const [id, x] of fromSessions.table) {
    const mine = sessions.table.get(id);
    if (!mine) {
      sessions.table.set(id, { owner: x.owner, floor: x.floor, used: x.used, results: new Map(x.results) });
      continue;
    }
    mine.floor = Math.max(mine.floor, x.floor);
    mine.used = Math.max(mine.used, x.used);
    for (const [seq, r] of x.results) if (!mine.results.has(seq)) mine.results.set(seq, r);
    for (const seq of [...mine.results.keys()]) if (seq < mine.floor) mine.results.delete(seq);
  }
}

/**
 * Encoding overhead of one entry in a transfer or a snapshot (CBOR: the pair, the byte strings' heads, the
 * entry's field names, version and epoch), counted against the range's bound with its key and value.
 */
export const entryOverheadBytes = 48;

/**
 * What one entry costs a range: its key's and value's bytes plus the entry's encoding overhead (a tombstone keeps
 * its key). Keys and values travel as CBOR byte strings (one byte per latin1 char), so this bounds the encoded size.
 */
export function entryBytes(key: string, e: Entry | undefined): number {
  return e ? key.length + (e.value?.length ?? 0) + entryOverheadBytes : 0;
}

export function dataBytes(d: RangeData): number {
  let n = 0;
  for (const [k, e] of d) n += entryBytes(k, e);
  return n;
}

function applyWrite(r: RangeState, op: WriteOp): void {
  if (op.key !== null && op.entry !== null) {
    const old = r.data.get(op.key);
    if (newer(op.entry, old)) {
      r.bytes += entryBytes(op.key, op.entry) - entryBytes(op.key, old);
      r.data.set(op.key, op.entry);
    }
  }
  const s = r.sessions;
  if (op.open) {
    s.table.set(op.open.id, { owner: op.open.owner, floor: 0, used: op.open.used, results: new Map() });
    s.next = Math.max(s.next, sessionCounter(op.open.id) + 1);
    if (op.open.evict !== null) s.table.delete(op.open.evict);
    s.clock = Math.max(s.clock, op.open.used);
  }
  if (op.req) {
    const x = s.table.get(op.req.session);
    if (!x) return; // evicted meanwhile: the result cannot be kept, and the owner answered from its own copy
    x.floor = Math.max(x.floor, op.req.floor);
    x.used = Math.max(x.used, op.req.used);
    s.clock = Math.max(s.clock, op.req.used);
    for (const seq of [...x.results.keys()]) if (seq < x.floor) x.results.delete(seq);
    if (op.req.seq >= x.floor) x.results.set(op.req.seq, { result: op.req.result, digest: op.req.digest });
  }
}

/** The one place durable state changes: live (through the node's record()) and on replay. */
export function applyRecord(r: RangeState, rec: LogRecord): void {
  switch (rec.t) {
    case 'acc':
      if (r.config && r.config.epoch === rec.epoch) {
        r.promised = rec.promised;
        r.accepted = rec.accepted;
      }
      return;
    case 'round':
      r.round = Math.max(r.round, rec.round);
      return;
    case 'cfg':
      r.config = rec.config;
      r.synced = false;
      r.promised = null;
      r.accepted = null;
      return;
    case 'snap':
      r.data = new Map(rec.data);
      r.bytes = dataBytes(r.data);
      r.sessions = cloneSessions(rec.sessions);
      r.synced = rec.synced;
      if (rec.ballot) r.install = { instance: rec.instance, ballot: rec.ballot };
      return;
    case 'w':
      applyWrite(r, rec.op);
      return;
    case 'mark':
    case 'wit':
      return; // node-level: the node applies them
  }
}
