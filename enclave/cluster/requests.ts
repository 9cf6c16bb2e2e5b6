/**
 * Exactly-once writes: the table of recent request ids and their results.
 *
 * Every write from the SDK carries a request id, (session, seq): a random 16-byte session id per
 * client and a sequence number it increments per write and reuses on every retry of that write (its
 * own, on another node, or a forwarding node's). The owner records the id with the write in its
 * sealed log and replicates it with the entry, so the owner and each replica learn it; a retry that
 * finds its id here gets the original result instead of applying the write again.
 *
 * Bounded memory: at most `requestIdsMax` ids (oldest evicted first). When an id is evicted, its
 * session's watermark (the highest evicted seq, per session, at most `sessionsMax` sessions) rises;
 * a write whose id is not in the table but at or below its session's watermark is refused with
 * EXPIRED (it may have been applied already, so it must not be applied again). Past both bounds
 * (a session evicted from the watermarks too, after `sessionsMax` other sessions lost ids) a very
 * late retry is indistinguishable from a new write: see docs/durability.md.
 *
 * Pure and synchronous: no I/O, no clock.
 */
import { EkvError } from '../../protocol/errors.ts';

export const sessionIdBytes = 16;
export const requestIdsMax = 131_072;
export const sessionsMax = 65_536;

/** Request-table rows sent with one batch of a pull, hand-off or sync push (at most). */
export const rowsPerBatchMax = 4096;

export interface RequestId {
  session: Buffer;
  seq: number;
  /**
   * Set on a re-sent write (the SDK's retry on another node, a forwarding node's retry after an attempt
   * that may have reached an owner): if its id is unknown here it may have been applied elsewhere, so
   * it is refused with EXPIRED rather than applied (again). Never recorded: only on the wire.
   */
  retry?: boolean;
}

/** What a write did, as its first answer said. */
export interface WriteResult {
  version: number;
  /** A delete (that removed a value); else a put. */
  deleted: boolean;
}

/** A stored result: with the low 32 bits of the key's ring id (a retry must name the same key). */
export interface StoredResult extends WriteResult {
  keyTag: number;
}

/** The key check is probabilistic (32 bits), to keep entries small: a mismatch is only a client's own bug. */
export function keyTagOf(kid: bigint): number {
  return Number(kid & 0xffff_ffffn);
}

/** A request id from the wire (`[session bytes, seq]`, `[session, seq, true]` for a retry), or null when absent; BAD_REQUEST when malformed. */
export function wireRequestId(x: unknown): RequestId | null {
  if (x === undefined || x === null) return null;
  if (!Array.isArray(x) || x.length < 2 || x.length > 3) throw new EkvError('BAD_REQUEST', 'bad request id');
  const [s, n, rt] = x as unknown[];
  if (!(s instanceof Uint8Array) || s.length !== sessionIdBytes) throw new EkvError('BAD_REQUEST', 'bad request session');
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new EkvError('BAD_REQUEST', 'bad request sequence');
  if (x.length === 3 && rt !== true) throw new EkvError('BAD_REQUEST', 'bad request retry flag');
  return rt === true ? { session: Buffer.from(s), seq: n, retry: true } : { session: Buffer.from(s), seq: n };
}

/** The id as recorded and replicated: [session, seq] (never the retry flag). */
export function requestIdToWire(r: RequestId): [Buffer, number] {
  return [r.session, r.seq];
}

/** The id as a forwarded write carries it: with the retry flag when set. */
export function forwardedRequestId(r: RequestId): [Buffer, number] | [Buffer, number, true] {
  return r.retry === true ? [r.session, r.seq, true] : [r.session, r.seq];
}

/** The table's key: the session's 16 bytes as latin1, then the sequence number in decimal. */
function idKey(r: RequestId): string {
  return `${r.session.toString('latin1')}${r.seq}`;
}

function ridOf(k: string): RequestId {
  return { session: Buffer.from(k.slice(0, sessionIdBytes), 'latin1'), seq: Number(k.slice(sessionIdBytes)) };
}

export class RequestTable {
  /** Insertion order is eviction order. Compact on purpose: about 180 bytes per id in V8 (23.5 MB at requestIdsMax, measured). */
  private readonly ids = new Map<string, StoredResult>();
  /** Session (latin1) -> the highest seq evicted from `ids`; insertion order is eviction order. */
  private readonly watermarks = new Map<string, number>();

  constructor(private readonly limits: { idsMax: number; sessionsMax: number } = { idsMax: requestIdsMax, sessionsMax }) {
    if (limits.idsMax < 1 || limits.sessionsMax < 1) throw new RangeError('request table limits must be positive');
  }

  get size(): number {
    return this.ids.size;
  }

  /**
   * The earlier result of this request, or null if it is new. Throws EXPIRED when the id is older than
   * what the table still remembers, BAD_REQUEST when the id was used for another key.
   */
  lookup(rid: RequestId, kid: bigint): WriteResult | null {
    const hit = this.ids.get(idKey(rid));
    if (hit) {
      if (hit.keyTag !== keyTagOf(kid)) throw new EkvError('BAD_REQUEST', 'this request id was used for another key');
      return { version: hit.version, deleted: hit.deleted };
    }
    const mark = this.watermarks.get(rid.session.toString('latin1'));
    if (mark !== undefined && rid.seq <= mark) {
      throw new EkvError('EXPIRED', 'this write is older than the request ids this node remembers: its outcome is unknown and it was not applied again');
    }
    if (rid.retry === true) {
      // A re-sent write this node has no record of: an earlier attempt may have been applied where this
      // node cannot see it (an owner that died or was rolled back, a table rebuilt from old sealed state).
      throw new EkvError('EXPIRED', 'this retried write is unknown to this node: its outcome is unknown and it was not applied again');
    }
    return null;
  }

  /** Remember a write's result for the key with ring id `kid` (a later add of the same id replaces it). */
  add(rid: RequestId, kid: bigint, result: WriteResult): void {
    this.addStored(rid, { keyTag: keyTagOf(kid), version: result.version, deleted: result.deleted });
  }

  addStored(rid: RequestId, stored: StoredResult): void {
    const k = idKey(rid);
    this.ids.delete(k);
    this.ids.set(k, { keyTag: stored.keyTag, version: stored.version, deleted: stored.deleted });
    while (this.ids.size > this.limits.idsMax) {
      const oldest = this.ids.keys().next().value as string;
      this.ids.delete(oldest);
      this.raise(ridOf(oldest));
    }
  }

  /** The rows (as encodeRequestTable's) of the keys with these tags, the newest `max` (for a pull, hand-off or sync push). */
  rowsFor(tags: ReadonlySet<number>, max = rowsPerBatchMax): unknown[] {
    const rows: unknown[] = [];
    for (const [k, e] of this.ids) {
      if (!tags.has(e.keyTag)) continue;
      const rid = ridOf(k);
      rows.push([rid.session, rid.seq, e.keyTag, e.version, e.deleted]);
    }
    return rows.length > max ? rows.slice(rows.length - max) : rows;
  }

  /**
   * Merge rows a peer sent with entries (a pull answer, a hand-off or sync push); only rows of the keys
   * with these tags (the batch's) are taken, and ids already known here are kept as they are.
   * BAD_REQUEST when malformed or too many (checked before anything is taken).
   */
  mergeRows(raw: unknown, tags: ReadonlySet<number>): number {
    if (raw === undefined) return 0;
    if (!Array.isArray(raw) || raw.length > rowsPerBatchMax) throw new EkvError('BAD_REQUEST', 'bad request-table rows');
    const rows: Array<[RequestId, StoredResult]> = [];
    for (const r of raw as unknown[]) {
      if (!Array.isArray(r) || r.length !== 5) throw new EkvError('BAD_REQUEST', 'bad request-table row');
      const [s, n, tag, v, d] = r as unknown[];
      const rid = wireRequestId([s, n]) as RequestId;
      if (typeof tag !== 'number' || !Number.isInteger(tag) || tag < 0 || tag > 0xffff_ffff) throw new EkvError('BAD_REQUEST', 'bad request-table key tag');
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || typeof d !== 'boolean') throw new EkvError('BAD_REQUEST', 'bad request-table result');
      rows.push([rid, { keyTag: tag, version: v, deleted: d }]);
    }
    let merged = 0;
    for (const [rid, stored] of rows) {
      if (!tags.has(stored.keyTag) || this.ids.has(idKey(rid))) continue;
      this.addStored(rid, stored);
      merged++;
    }
    return merged;
  }

  /** Everything, oldest first (for the sealed snapshot). */
  dump(): { ids: Array<[RequestId, StoredResult]>; watermarks: Array<[Buffer, number]> } {
    return {
      ids: [...this.ids].map(([k, e]) => [ridOf(k), e]),
      watermarks: [...this.watermarks].map(([s, n]) => [Buffer.from(s, 'latin1'), n]),
    };
  }

  /** Restore a watermark (from a snapshot). */
  restoreWatermark(session: Buffer, seq: number): void {
    this.raise({ session, seq });
  }

  private raise(rid: RequestId): void {
    const s = rid.session.toString('latin1');
    const prev = this.watermarks.get(s) ?? 0;
    this.watermarks.delete(s);
    this.watermarks.set(s, Math.max(prev, rid.seq));
    while (this.watermarks.size > this.limits.sessionsMax) this.watermarks.delete(this.watermarks.keys().next().value as string);
  }
}

/** The table as a snapshot part (CBOR-ready): [[[session, seq, keyTag, version, deleted], ...], [[session, watermark], ...]]. */
export function encodeRequestTable(t: RequestTable): unknown {
  const d = t.dump();
  return [d.ids.map(([rid, r]) => [rid.session, rid.seq, r.keyTag, r.version, r.deleted]), d.watermarks];
}

/** Fill `t` from a snapshot part (sealed by this node, so malformed parts are skipped rather than refused). */
export function restoreRequestTable(t: RequestTable, raw: unknown): void {
  if (!Array.isArray(raw) || raw.length !== 2 || !Array.isArray(raw[0]) || !Array.isArray(raw[1])) return;
  for (const w of raw[1] as unknown[]) {
    if (Array.isArray(w) && w[0] instanceof Uint8Array && w[0].length === sessionIdBytes && typeof w[1] === 'number') t.restoreWatermark(Buffer.from(w[0]), w[1]);
  }
  for (const e of raw[0] as unknown[]) {
    if (!Array.isArray(e) || e.length !== 5 || typeof e[2] !== 'number' || typeof e[3] !== 'number') continue;
    const rid = wireRequestId([e[0], e[1]]);
    if (rid) t.addStored(rid, { keyTag: e[2], version: e[3], deleted: e[4] === true });
  }
}
