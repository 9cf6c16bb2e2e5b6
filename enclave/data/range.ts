// One range's state at one node, and the pure functions that change it from
// log records. Replaying a node's log through applyRecord gives exactly the
// state the live node had when those records were made durable.
import type { Ballot, Config, Entry, LogRecord, RangeData, Session, Sessions, WriteOp } from './types.ts';
import { newer, sessionCounter } from './types.ts';

/**
 * Deadlines of a range's expiring entries (this node's ticks), earliest first: a binary min-heap with lazy
 * deletion (an item is current only while the key's entry still has that deadline). Rebuilt from the data when
 * stale items outnumber live ones, so it holds at most about twice the range's keys.
 */
export class DeadlineHeap {
  private h: Array<{ until: number; key: string }> = [];

  get size(): number {
    return this.h.length;
  }

  peek(): { until: number; key: string } | undefined {
    return this.h[0];
  }

  push(until: number, key: string): void {
    const h = this.h;
    h.push({ until, key });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((h[p] as { until: number }).until <= (h[i] as { until: number }).until) break;
      [h[p], h[i]] = [h[i] as { until: number; key: string }, h[p] as { until: number; key: string }];
      i = p;
    }
  }

  pop(): { until: number; key: string } | undefined {
    const h = this.h;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && (h[l] as { until: number }).until < (h[m] as { until: number }).until) m = l;
        if (r < h.length && (h[r] as { until: number }).until < (h[m] as { until: number }).until) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i] as { until: number; key: string }, h[m] as { until: number; key: string }];
        i = m;
      }
    }
    return top;
  }

  /** Drops stale items when they dominate (called after pushes). */
  compact(data: RangeData): void {
    if (this.h.length <= 2 * data.size + 64) return;
    const live = this.h.filter((x) => data.get(x.key)?.until === x.until);
    this.h = [];
    for (const x of live) this.push(x.until, x.key);
  }
}

/**
 * An entry as this node holds it: with a ttl, its deadline here is now plus the ticks left (counted from now:
 * the time the entry spent in flight or on disk is not counted, so later, never earlier); any `until` it came
 * with (another node's clock) is ignored.
 */
export function entryHere(e: Entry, now: number, rule: TtlRule): Entry {
  if (e.ttl === undefined || e.value === null) return e.until === undefined && e.ttl === undefined ? e : { value: e.value, version: e.version, epoch: e.epoch };
  // (Broken build only: a deadline that came with the entry, read on another node's clock, is taken as this node's.)
  if (rule.absolute && e.until !== undefined) return e;
  return { value: e.value, version: e.version, epoch: e.epoch, ttl: e.ttl, until: now + e.ttl };
}

/** How a node counts ttls: `absolute` is the broken build's (DataConfig.broken.absoluteDeadlines). */
export interface TtlRule {
  readonly driftPpm: number;
  readonly absolute?: boolean;
}

/** An entry as it leaves this node (a message, a snapshot): the ticks left on its deadline at `now`, no `until`. */
export function entryOut(e: Entry, now: number, rule?: TtlRule): Entry {
  if (e.until === undefined || rule?.absolute) return e;
  return { value: e.value, version: e.version, epoch: e.epoch, ttl: Math.max(0, e.until - now) };
}

/** A range's data as it leaves this node at `now` (promise, sync, snapshot). */
export function dataOut(d: RangeData, now: number, rule?: TtlRule): RangeData {
  const out = new Map<string, Entry>();
  for (const [k, e] of d) out.set(k, entryOut(e, now, rule));
  return out;
}

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
  /** The owner's own write: the expiry of `prev` (a tombstone), started at its deadline. */
  readonly expire: boolean;
  /** Gets that found `prev` expired: answered once this write is acknowledged (never "absent" before). */
  readonly gets: Array<{ client: string; rid: number }>;
}

export interface Pending {
  readonly client: string;
  readonly rid: number;
  readonly op: import('./types.ts').ClientOp;
  /** A write's request digest, computed once when it arrived ('' for an open). */
  readonly digest: string;
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
  /**
   * Keys with a value in `data` (tombstones not counted; kept with it). `status` reads it for every caller,
   * anonymous included: counting `data` there cost O(keys) per request (review-14 F3).
   */
  keys: number;
  // Memory only.
  /** Deadlines of the entries that expire (rebuilt on replay: applying a record pushes them). */
  expiries: DeadlineHeap;
  leaseUntil: number;
  active: boolean;
  activating: { acks: Set<string>; startedAt: number; sentAt: number } | null;
  lease: { validUntil: number; t0: number; grants: Set<string> };
  inflight: Map<string, Inflight>;
  queues: Map<string, Pending[]>;
  queued: number;
  /** `queued` by principal tag (opens and writes): each is bounded to a share of `queuedMax` (node.ts). */
  queuedBy: Map<string, number>;
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
    data: new Map(), sessions: emptySessions(), bytes: 0, keys: 0, expiries: new DeadlineHeap(),
    leaseUntil: -Infinity, active: false, activating: null, lease: { validUntil: -Infinity, t0: -Infinity, grants: new Set() },
    inflight: new Map(), queues: new Map(), queued: 0, queuedBy: new Map(), byReq: new Map(), proposal: null, nextTry: 0,
    lastUse: new Map(), activeAt: 0,
  };
}

export function cloneSessions(s: Sessions): Sessions {
  const table = new Map<number, Session>();
  for (const [id, x] of s.table) table.set(id, { owner: x.owner, floor: x.floor, used: x.used, results: new Map(x.results) });
  return { next: s.next, clock: s.clock, table };
}

/**
 * Per key the greatest (epoch, version), and of copies of the same write the one with the least time left (every
 * copy's deadline is never early, so the least is the most precise); sessions by union (the greater floor, every
 * result kept).
 */
export function mergeInto(data: RangeData, sessions: Sessions, fromData: RangeData, fromSessions: Sessions): void {
  for (const [k, e] of fromData) {
    const cur = data.get(k);
    const sooner = cur !== undefined && e.epoch === cur.epoch && e.version === cur.version && e.ttl !== undefined && (cur.ttl === undefined || e.ttl < cur.ttl);
    if (newer(e, cur) || sooner) data.set(k, e);
  }
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
/** What a ttl adds to an entry's encoding (the field's name and an integer of up to 9 bytes). */
export const ttlOverheadBytes = 16;

/**
 * What one entry costs a range: its key's and value's bytes plus the entry's encoding overhead (a tombstone keeps
 * its key). Keys and values travel as CBOR byte strings (one byte per latin1 char), so this bounds the encoded size.
 */
export function entryBytes(key: string, e: Entry | undefined): number {
  return e ? key.length + (e.value?.length ?? 0) + entryOverheadBytes + (e.ttl !== undefined ? ttlOverheadBytes : 0) : 0;
}

export function dataBytes(d: RangeData): number {
  let n = 0;
  for (const [k, e] of d) n += entryBytes(k, e);
  return n;
}

/** Sets a key's entry as this node holds it, keeping the byte count and the deadlines. */
function setEntry(r: RangeState, key: string, e: Entry, now: number, rule: TtlRule): void {
  const here = entryHere(e, now, rule);
  r.data.set(key, here);
  if (here.until !== undefined) r.expiries.push(here.until, key);
}

function applyWrite(r: RangeState, op: WriteOp, now: number, rule: TtlRule): void {
  if (op.key !== null && op.entry !== null) {
    const old = r.data.get(op.key);
    if (newer(op.entry, old)) {
      r.bytes += entryBytes(op.key, op.entry) - entryBytes(op.key, old);
      r.keys += (op.entry.value !== null ? 1 : 0) - (old !== undefined && old.value !== null ? 1 : 0);
      setEntry(r, op.key, op.entry, now, rule);
      r.expiries.compact(r.data);
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

/**
 * The one place durable state changes: live (through the node's record()) and on replay. `now` is this node's
 * clock when the record is applied: an entry's ttl is counted from then (on replay, from the restart: a key
 * outlives its ttl by the time the node was down, never the reverse).
 */
export function applyRecord(r: RangeState, rec: LogRecord, now: number, rule: TtlRule): void {
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
      r.data = new Map();
      r.expiries = new DeadlineHeap();
      for (const [k, e] of rec.data) setEntry(r, k, e, now, rule);
      r.bytes = dataBytes(r.data);
      r.keys = 0;
      for (const e of r.data.values()) if (e.value !== null) r.keys++;
      r.sessions = cloneSessions(rec.sessions);
      r.synced = rec.synced;
      if (rec.ballot) r.install = { instance: rec.instance, ballot: rec.ballot };
      return;
    case 'w':
      applyWrite(r, rec.op, now, rule);
      return;
    case 'mark':
    case 'wit':
      return; // node-level: the node applies them
  }
}
