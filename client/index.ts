/**
 * The enclave-kv SDK.
 *
 *   const kv = await connect({ nodes: ['10.0.0.5:7000'], trust: { pcrs: { 0: '<PCR0 hex>' } } });
 *   // or: connect({ cluster: './cluster.json', trust }); a local `ekv up` ring: connect({ cluster, trustClusterFile: true })
 *   await kv.put('k', 'v'); const v = await kv.get('k'); await kv.close();
 *
 * Before its first request to a node the client verifies that node's
 * attestation document against the trust policy and refuses the node with
 * EkvError('UNATTESTED') otherwise; every answer then arrives over the
 * channel bound to that document.
 */
import { createHash, hash } from 'node:crypto';
import { keyBytesMax, ttlMsMax, valueBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import type { PrincipalSigner } from '../protocol/handshake.ts';
import { AccessApi } from './acl.ts';
import { Floor, noRing, type FloorSnapshot } from './floor.ts';
import { loadCluster, type ClusterFile } from './cluster.ts';
import { NodeConnection, type LearntRing } from './node-connection.ts';
import { mget, mput, type ClientPort, type MgetResult, type MputResult } from './batch.ts';
import { listNamespaces, scanIterate, scanPage, type ScanItem, type ScanOptions, type ScanPage } from './scan.ts';
import { checkTrustPolicy, documentVerifier, resolveTrust, type ResolvedTrust, type TrustPolicy } from './trust.ts';

export { EkvError } from '../protocol/errors.ts';
export type { EkvErrorCode } from '../protocol/errors.ts';
export type { ResolvedTrust, TrustPolicy, TrustSource } from './trust.ts';
export type { ClusterFile } from './cluster.ts';
export { AccessApi, type AclView, type GroupView } from './acl.ts';
export { Floor, floorKeysMax, type StaleReason } from './floor.ts';
export { batchKeysMax, type MgetResult, type MputResult } from './batch.ts';
export { cursorCharsMax, scanLimitMax, type ScanItem, type ScanOptions, type ScanPage } from './scan.ts';

export type Bytes = Uint8Array | string;

/**
 * How the client picks the node for a key:
 * - 'cached' (default): the owner by the ring view this client has seen (the identities of the nodes it
 *   verified); a stale view costs a forward inside the ring, never a wrong answer.
 * - 'iterative': walk the ring one verified node at a time ('route' steps) to the owner, checking that each
 *   node's attested identity hashes to the ring id its predecessor named.
 * - 'any': a node chosen by hashing the key over the node list; the ring forwards (recursive lookup).
 */
export type Routing = 'cached' | 'iterative' | 'any';

export interface ConnectOptions {
  routing?: Routing;
  /** A cluster file path, or its parsed contents. */
  cluster?: string | ClusterFile;
  /** Node addresses (host:port), with `trust`. */
  nodes?: string[];
  /** The trust policy. When given it is the whole policy: a cluster file's trust section is then ignored. */
  trust?: TrustPolicy;
  /**
   * Use the cluster file's trust section (roots, PCRs, allowAnyImage, allowDebug) as the policy. Only for a
   * file you trust as much as your own code (the one your own `ekv up` wrote): whoever writes it chooses
   * which enclaves you talk to. Without it (and without `trust`), only the file's addresses are used.
   */
  trustClusterFile?: boolean;
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
  /** A principal to prove in every handshake (access control). */
  identity?: PrincipalSigner;
  /**
   * Rollback and fork detection (client/floor.ts, docs/recovery.md): the client refuses with STALE any answer
   * older than what it has seen of that key in that ring. `floorFile` keeps that floor across processes (read
   * at connect, written atomically by close()); `floor: false` switches the check off.
   */
  floorFile?: string;
  floor?: boolean;
}

export interface GetResult {
  value: Buffer;
  version: number;
}

/** Options of put and delete. */
export interface WriteOptions {
  /**
   * Compare-and-set: write only if the key's current version is this one (0: only if the key has no
   * value). Otherwise the call rejects with EkvError('CONFLICT') whose `version` is the current one.
   */
  ifVersion?: number;
}

/** Options of put. */
export interface PutOptions extends WriteOptions {
  /**
   * Expiry: the value reads as absent (NOT_FOUND, on every node, also after failovers and restarts) once this many
   * milliseconds have passed, counted by the enclaves' own monotonic clocks from when the range's owner applied the
   * write. Never earlier; later by 1 % (the drift bound), the owner's tick (10 ms) and one replication round, and by the time a
   * range takes to move or a node was down (docs/consistency.md "Expiry"). Whole ms in [1, ttlMsMax] (366 days).
   */
  ttlMs?: number;
}

export interface DeleteResult {
  /** Whether the key had a value (false: nothing to delete, which is not an error). */
  deleted: boolean;
  /** The key's version after the call: the delete's own version, or 0 when there was nothing to delete. */
  version: number;
}

/**
 * A write session of one range (docs/consistency.md, "Exactly once"): opened at the range's owner, which
 * allocates its number; every write of this client to a key of that range carries (session, seq, floor), the
 * same on every retry, so the range applies it once and answers a retry with the first outcome.
 */
interface RangeSession {
  readonly shard: number;
  readonly session: number;
  /** Next sequence number to hand out. */
  next: number;
  /** Sequence numbers not finished yet (the floor is the lowest: nothing below it will be sent again). */
  readonly outstanding: Set<number>;
  /** Woken when a write finishes (a seq waits while it would fall outside the range's window). */
  waiters: Array<() => void>;
  /**
   * No outstanding seq is below it (seqs are handed out in increasing order and never come back, so the lowest
   * outstanding one only rises): `lowestOutstanding` walks it forward instead of scanning the set on every write.
   */
  low: number;
}

function toBytes(x: Bytes): Buffer {
  if (typeof x === 'string') return Buffer.from(x, 'utf8');
  // A Buffer already is the view the other branch would make (same bytes, no copy): no second view per call.
  return Buffer.isBuffer(x) ? x : Buffer.from(x.buffer, x.byteOffset, x.length);
}

/** The enclave enforces these too; checking here keeps one bad request from costing the connection. */
function checkedKey(x: Bytes): Buffer {
  const k = toBytes(x);
  if (k.length === 0) throw new EkvError('BAD_REQUEST', 'key must not be empty');
  if (k.length > keyBytesMax) throw new EkvError('KEY_TOO_LARGE', `key of ${k.length} bytes exceeds ${keyBytesMax}`);
  return k;
}

function checkedIfVersion(o: WriteOptions | undefined): { iv?: number } {
  const v = o?.ifVersion;
  if (v === undefined) return {};
  if (!Number.isSafeInteger(v) || v < 0) throw new EkvError('BAD_REQUEST', 'ifVersion must be a non-negative integer');
  return { iv: v };
}

function checkedTtl(o: PutOptions | undefined): { t?: number } {
  const t = o?.ttlMs;
  if (t === undefined) return {};
  if (!Number.isSafeInteger(t) || t < 1 || t > ttlMsMax) throw new EkvError('BAD_REQUEST', `ttlMs must be an integer in [1, ${ttlMsMax}]`);
  return { t };
}

function checkedValue(x: Bytes): Buffer {
  const v = toBytes(x);
  if (v.length > valueBytesMax) throw new EkvError('VALUE_TOO_LARGE', `value of ${v.length} bytes exceeds ${valueBytesMax}`);
  return v;
}

/** The node whose answer (or refusal) an operation returns: its ring id keys the floor. */
interface Via {
  conn?: NodeConnection;
  /** How many times the request was sent (the write retry rule reads it). */
  count: number;
}

const emptySnapshot: FloorSnapshot = new Map();

/** The smallest outstanding sequence number of a session (Infinity: none), amortized O(1). */
function lowestOutstanding(s: RangeSession): number {
  if (s.outstanding.size === 0) return Infinity;
  while (!s.outstanding.has(s.low)) s.low++;
  return s.low;
}

/**
 * A key's range from the hex SHA-256 of the key: floor(h * shards / 2^256), as the nodes compute it. With x the
 * top 32 bits of h times shards (exact in a double, shards <= 2^16), the answer is floor(x / 2^32) unless the
 * bits below could carry into it (x mod 2^32 >= 2^32 - shards, about one key in 65,536): then exactly, in BigInt.
 */
export function shardOfHash(hex: string, shards: number): number {
  const x = parseInt(hex.slice(0, 8), 16) * shards;
  const q = Math.floor(x / 0x1_0000_0000);
  if (x - q * 0x1_0000_0000 < 0x1_0000_0000 - shards) return q;
  return Number((BigInt('0x' + hex) * BigInt(shards)) >> 256n);
}

/** How a request reaches a node: directly, or through a batcher (client/batch.ts) that groups requests per node. */
export type Send = (c: NodeConnection, op: string, args: Record<string, unknown>) => Promise<RpcResult>;
const directSend: Send = (c, op, args) => c.call(op, args);
/** Whether callRouted tries a request again elsewhere after `e` (a write also after a TIMEOUT, see callRouted). */
function retriable(e: unknown, args: Record<string, unknown>): boolean {
  return e instanceof EkvError && (e.code === 'UNAVAILABLE' || e.code === 'CLOSED' || (e.code === 'TIMEOUT' && args.s !== undefined));
}

/** A whole range as a routing target (scans). */
interface RangeTarget {
  readonly shard: number;
}

/** Hex forms of ring ids and lineages, computed once per handshake's Buffer (not on every answer). */
const ringHex = new WeakMap<Buffer, string>();
const lineageHex = new WeakMap<readonly Buffer[], readonly string[]>();
const noLineage = { generation: 0, previous: [] as readonly Buffer[] };

function ringOf(via: Via): string {
  const id = via.conn?.ringId;
  if (!id) return noRing;
  let hex = ringHex.get(id);
  if (hex === undefined) {
    hex = id.toString('hex');
    ringHex.set(id, hex);
  }
  return hex;
}

function hexList(ids: readonly Buffer[]): readonly string[] {
  if (ids.length === 0) return [];
  let hex = lineageHex.get(ids);
  if (hex === undefined) {
    hex = ids.map((p) => p.toString('hex'));
    lineageHex.set(ids, hex);
  }
  return hex;
}

export const iterativeStepsMax = 32;
const ringIdMask = (1n << 256n) - 1n;
export const knownNodesMax = 4096;

export class EkvClient {
  private readonly conns: NodeConnection[];
  private readonly byAddr = new Map<string, NodeConnection>();
  private readonly routing: Routing;
  private readonly timeoutMs: number;
  private readonly makeConn: (addr: string) => NodeConnection;
  /** The last route taken: hops walked (iterative) and the node asked. */
  lastRoute: { addr: string; steps: number } | null = null;
  /** Namespaces, ACLs and groups (client/acl.ts): signed with `identity`. */
  readonly acl: AccessApi;
  /** Write sessions by range, and the ranges' count and result window (learnt from the first `open`). */
  private readonly sessions = new Map<number, RangeSession>();
  private readonly opening = new Map<number, Promise<RangeSession>>();
  private shards: number | null = null;
  private window = 64;

  /** What this client has seen (null: the check is off). */
  readonly floor: Floor | null;

  constructor(addrs: string[], trust: TrustPolicy, opts: { timeoutMs: number; identity?: PrincipalSigner; routing?: Routing; floor?: Floor | null }) {
    if (addrs.length === 0) throw new EkvError('BAD_REQUEST', 'no nodes to connect to');
    checkTrustPolicy(trust);
    const verify = documentVerifier(trust);
    this.floor = opts.floor === undefined ? new Floor() : opts.floor;
    // No ring id pinned: hold every node to the ring this client (or its floor file) met first (review-17 F1).
    const floor = this.floor;
    const learntRing: LearntRing = {
      id: floor?.learntRing ?? null,
      learn: (id) => {
        learntRing.id = id;
        floor?.learnRing(id);
      },
    };
    const connOpts = {
      timeoutMs: opts.timeoutMs, ...(opts.identity ? { principal: opts.identity } : {}), ...(trust.now ? { now: trust.now } : {}),
      ...(trust.ringId ? { ringId: trust.ringId } : { learntRing }),
    };
    this.makeConn = (a) => new NodeConnection(a, verify, connOpts);
    this.conns = addrs.map((a) => this.makeConn(a));
    for (const c of this.conns) this.byAddr.set(c.addr, c);
    this.routing = opts.routing ?? 'cached';
    this.timeoutMs = opts.timeoutMs;
    this.acl = new AccessApi(async (key, op, args, answered) => {
      const via: Via = { count: 0 };
      let r: RpcResult;
      try {
        r = await this.callRouted(key, op, args, via);
      } catch (err) {
        // A refusal's node (NOT_FOUND for a document this client saw is a read of "none": acl.ts checks it).
        if (answered && err instanceof EkvError && err.code === 'NOT_FOUND' && via.conn) {
          this.checkGeneration(via, undefined);
          answered.ring = ringOf(via);
        }
        throw err;
      }
      if (answered) {
        this.checkGeneration(via, r.g);
        answered.ring = ringOf(via);
      }
      return r;
    }, opts.identity ?? null, this.floor);
  }

  /** Verify every node now (connect eagerly); rejects with the first refusal. */
  async verifyAll(): Promise<void> {
    await Promise.all(this.conns.map((c) => c.ensure()));
  }

  async get(key: Bytes): Promise<Buffer> {
    return (await this.getWithVersion(key)).value;
  }

  getWithVersion(key: Bytes): Promise<GetResult> {
    return this.getVia(key, directSend);
  }

  private async getVia(key: Bytes, send: Send): Promise<GetResult> {
    const k = checkedKey(key);
    const before = this.floorBefore(k);
    const via: Via = { count: 0 };
    let r: RpcResult;
    try {
      r = await this.callRouted(k, 'get', { k }, via, send);
    } catch (err) {
      // NOT_FOUND carries the version of the key's delete (0: never written): a read of "no value".
      if (this.floor && err instanceof EkvError && err.code === 'NOT_FOUND') {
        this.checkGeneration(via, undefined);
        this.floor.checkRead(ringOf(via), k, before, err.version, null);
      }
      throw err;
    }
    if (!(r.v instanceof Uint8Array) || typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed get answer');
    if (this.floor) {
      const ring = ringOf(via);
      this.checkGeneration(via, r.g);
      this.floor.checkRead(ring, k, before, r.n, r.v);
    }
    return { value: Buffer.from(r.v), version: r.n };
  }

  /**
   * Store a value; resolves with the key's new version once the write is acknowledged (durable on
   * every holder). `{ ifVersion }` makes it a compare-and-set; `{ ttlMs }` makes the value expire. A rejection with UNAVAILABLE, TIMEOUT,
   * CLOSED or EXPIRED leaves the outcome unknown (the write may have taken or still take effect, once);
   * CONFLICT, FORBIDDEN and the other refusals mean it was not applied. STALE: the node acknowledged it at a
   * version at or below one this client has seen (a rolled-back or forked ring took it).
   */
  put(key: Bytes, value: Bytes, opts?: PutOptions): Promise<number> {
    return this.putVia(key, value, opts, directSend);
  }

  private async putVia(key: Bytes, value: Bytes, opts: PutOptions | undefined, send: Send): Promise<number> {
    const k = checkedKey(key);
    const v = checkedValue(value);
    const args: Record<string, unknown> = { k, v };
    if (opts !== undefined) {
      // The same fields in the same order as before: k, v, then iv, then t.
      const ttl = checkedTtl(opts);
      const iv = checkedIfVersion(opts);
      if (iv.iv !== undefined) args.iv = iv.iv;
      if (ttl.t !== undefined) args.t = ttl.t;
    }
    const hex = hash('sha256', k, 'hex');
    const before = this.floorBefore(k, hex);
    const via: Via = { count: 0 };
    let r: RpcResult;
    try {
      r = await this.write(k, 'put', args, via, send, hex);
    } catch (err) {
      this.floorOnError(err, via, before, k);
    }
    if (typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed put answer');
    if (this.floor) {
      const ring = ringOf(via);
      this.checkGeneration(via, r.g);
      this.floor.checkWrite(ring, k, before, r.n, v);
    }
    return r.n;
  }

  /** Delete a key; a key without a value is not an error (`deleted: false`). `{ ifVersion }` as for put. */
  async delete(key: Bytes, opts?: WriteOptions): Promise<DeleteResult> {
    const k = checkedKey(key);
    const hex = hash('sha256', k, 'hex');
    const before = this.floorBefore(k, hex);
    const via: Via = { count: 0 };
    const args: Record<string, unknown> = { k };
    const iv = checkedIfVersion(opts).iv;
    if (iv !== undefined) args.iv = iv;
    let r: RpcResult;
    try {
      r = await this.write(k, 'del', args, via, directSend, hex);
    } catch (err) {
      this.floorOnError(err, via, before, k);
    }
    if (typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed delete answer');
    const n = r.n;
    // A delete of a key without a value answers version 0, and in `t` the version of the key's delete (0: never
    // written): a read of "no value", checked as one (a node without `t` cannot be checked).
    const t = typeof r.t === 'number' && Number.isSafeInteger(r.t) && r.t >= 0 ? r.t : undefined;
    if (this.floor) {
      const ring = ringOf(via);
      this.checkGeneration(via, r.g);
      if (r.d === true) this.floor.checkWrite(ring, k, before, n, null);
      else this.floor.checkRead(ring, k, before, t, null);
    }
    return { deleted: r.d === true, version: n };
  }

  // ROLLBACK-FLOOR HOOKS (issue 12 section 3): the floor is taken when an operation is sent and checked
  // against the answer of the node that gave it (its ring id); a STALE answer is thrown, never returned.
  private floorBefore(k: Buffer, hex?: string): FloorSnapshot {
    return this.floor ? this.floor.snapshot(k, hex) : emptySnapshot;
  }

  /**
   * The answering node's ring generation (its handshake's signed `rgen`, or the answer's `g` if higher) against
   * the highest this client has seen for any ring id of its lineage: a node of an older generation of the same
   * deployment (an old copy started again after its ring was reopened) is refused STALE (OLDER_GENERATION).
   */
  private checkGeneration(via: Via, g: unknown): void {
    if (!this.floor) return;
    const lineage = via.conn?.lineage ?? noLineage;
    const answered = typeof g === 'number' && Number.isSafeInteger(g) && g > lineage.generation ? g : lineage.generation;
    this.floor.checkGeneration(ringOf(via), answered, hexList(lineage.previous));
  }

  private floorOnError(err: unknown, via: Via, before: FloorSnapshot, k: Buffer): never {
    // A CONFLICT names the key's current version: not below what this client has seen. (0 means "no value",
    // which a delete after what this client saw also gives: then `absentAt`, the version of that delete, is
    // checked as a read of "no value"; a node that does not say cannot be checked.)
    if (this.floor && err instanceof EkvError && err.code === 'CONFLICT' && err.version !== undefined && err.version > 0) {
      this.checkGeneration(via, undefined);
      this.floor.checkVersion(ringOf(via), before, err.version);
    } else if (this.floor && err instanceof EkvError && err.code === 'CONFLICT' && err.version === 0 && err.absentAt !== undefined) {
      this.checkGeneration(via, undefined); // review-17 F2: as every other answer, never from an older generation
      this.floor.checkRead(ringOf(via), k, before, err.absentAt, null);
    }
    throw err;
  }

  /** Write the floor to its file now (close() does too). */
  saveFloor(): void {
    this.floor?.save();
  }

  /** The range of a key, once the ring's range count is known. */
  private shardOf(k: Buffer, hex?: string): number | null {
    if (this.shards === null) return null;
    return shardOfHash(hex ?? hash('sha256', k, 'hex'), this.shards);
  }

  /** This client's open session of the key's range, if it has one (what sessionFor resolves to at once). */
  private openSession(k: Buffer, hex?: string): RangeSession | undefined {
    const known = this.shardOf(k, hex);
    return known === null ? undefined : this.sessions.get(known);
  }

  /** This client's session of the key's range, opening one (at the range's owner) when there is none. */
  private async sessionFor(k: Buffer, hex?: string): Promise<RangeSession> {
    const known = this.shardOf(k, hex);
    if (known !== null) {
      const s = this.sessions.get(known);
      if (s) return s;
      const pending = this.opening.get(known);
      if (pending) return pending;
    }
    const p = (async (): Promise<RangeSession> => {
      const r = await this.callRouted(k, 'open', { k });
      const ok = (x: unknown, lo: number, hi: number): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= lo && x <= hi;
      if (!ok(r.s, 1, Number.MAX_SAFE_INTEGER) || !ok(r.S, 1, 1 << 16) || !ok(r.sh, 0, (r.S as number) - 1) || !ok(r.w, 2, 1 << 16)) {
        throw new EkvError('PROTOCOL', 'malformed open answer');
      }
      if (this.shards !== null && this.shards !== r.S) throw new EkvError('PROTOCOL', 'the ring changed its range count');
      this.shards = r.S;
      this.window = r.w;
      if (this.shardOf(k) !== r.sh) throw new EkvError('PROTOCOL', 'open answered for another range');
      const s: RangeSession = { shard: r.sh, session: r.s, next: 1, outstanding: new Set(), waiters: [], low: 1 };
      this.sessions.set(r.sh, s);
      return s;
    })();
    if (known !== null) this.opening.set(known, p);
    try {
      return await p;
    } finally {
      if (known !== null) this.opening.delete(known);
    }
  }

  /**
   * A write in the key's range session: a sequence number within the range's window of the lowest unfinished
   * one (the floor), the same (session, seq) on every retry.
   *
   * The retry rule: the write is sent again in a NEW session only on the one explicit "not applied" answer,
   * SESSION_EXPIRED (the range no longer knows the session, and the node that took the request made no
   * earlier attempt that may have reached the owner), and only if this SDK sent the request once (sent.count
   * === 1) and has not already re-sent it. Anything else that says the session is gone (OUTCOME_UNKNOWN from
   * the node, or SESSION_EXPIRED after this SDK sent it more than once) is thrown as EXPIRED with an
   * OUTCOME_UNKNOWN message: an earlier attempt may have been applied, and re-sending it in a new session
   * could apply it twice (or, for a create-if-absent, report CONFLICT for its own create).
   */
  private async write(k: Buffer, op: 'put' | 'del', args: Record<string, unknown>, via: Via = { count: 0 }, send: Send = directSend, hex?: string): Promise<RpcResult> {
    for (let fresh = 0; ; fresh++) {
      // The range's session when this client has it (every write but a range's first): no promise to wait for.
      const s = this.openSession(k, hex) ?? (await this.sessionFor(k, hex));
      while (s.outstanding.size > 0 && s.next - lowestOutstanding(s) >= this.window - 1) {
        await new Promise<void>((resolve) => s.waiters.push(resolve));
      }
      const seq = s.next++;
      s.outstanding.add(seq);
      const sent = via;
      sent.count = 0;
      try {
        const floor = lowestOutstanding(s);
        return await this.callRouted(k, op, { ...args, s: [s.session, seq, floor] }, sent, send);
      } catch (err) {
        const notApplied = err instanceof EkvError && err.code === 'EXPIRED' && err.message.startsWith('SESSION_EXPIRED');
        const unknown = err instanceof EkvError && err.code === 'EXPIRED' && err.message.startsWith('OUTCOME_UNKNOWN');
        if ((notApplied || unknown) && this.sessions.get(s.shard) === s) this.sessions.delete(s.shard);
        if (notApplied && sent.count === 1 && fresh === 0) continue;
        if (notApplied && sent.count > 1) throw new EkvError('EXPIRED', 'OUTCOME_UNKNOWN: the write session expired after this client sent the write more than once (it may have been applied)');
        throw err;
      } finally {
        s.outstanding.delete(seq);
        if (s.waiters.length > 0) {
          const waiters = s.waiters;
          s.waiters = [];
          for (const w of waiters) w();
        }
      }
    }
  }

  // ---- scans and batches (client/scan.ts, client/batch.ts; docs/scans.md) ----

  /**
   * One page of the keys (with `values: true`, also their values) that this client's principal may read, in
   * byte order; `cursor` continues after the page it came from (null: no more). Not a snapshot: each entry is
   * what a get of that key would have answered at some moment during the call.
   */
  scan(opts: ScanOptions = {}): Promise<ScanPage> {
    return scanPage(this.port(), opts);
  }

  /** Every key (and value) matching `prefix`, in byte order, page after page, with bounded memory. */
  scanAll(opts: Omit<ScanOptions, 'limit'> = {}): AsyncGenerator<ScanItem> {
    return scanIterate(this.port(), opts);
  }

  /** The namespaces this client's principal holds a right in (created ones: those with an ACL), sorted. */
  listNamespaces(opts: { prefix?: string } = {}): Promise<string[]> {
    return listNamespaces(this.port(), opts);
  }

  /**
   * Many gets: one request per node, grouped by the node each key is routed to; per-key results, in order (a
   * batch is not a transaction). Each key is exactly a get (retries, floor), and refusals are per key.
   */
  mget(keys: Bytes[]): Promise<MgetResult[]> {
    return mget(this.port(), keys);
  }

  /**
   * Many puts: one request per node; per-key results, in order (not a transaction: some may apply and others
   * not). Each item is exactly a put in its range's write session, with its own (session, seq) reused on every
   * retry, so no item is applied twice.
   */
  mput(entries: ReadonlyArray<readonly [Bytes, Bytes] | { key: Bytes; value: Bytes; ifVersion?: number; ttlMs?: number }>): Promise<MputResult[]> {
    return mput(this.port(), entries);
  }

  private port(): ClientPort {
    return {
      get: (k, send) => this.getVia(k, send),
      put: (k, v, o, send) => this.putVia(k, v, o, send),
      callRange: async (shard, op, args) => {
        const via: Via = { count: 0 };
        const r = await this.callRouted({ shard }, op, args, via);
        // The answering node's generation, as for a get (review-17 F2: an old copy's scan page was returned as current).
        this.checkGeneration(via, r.g);
        return { r, ring: ringOf(via) };
      },
      prepareWrites: async (keys) => {
        // One session per range, opened before the puts are sent, so that the puts leave in one turn (one mput
        // per node). A refusal here is left to the put of that key, which reports it.
        const first = keys[0];
        if (first === undefined) return;
        await this.sessionFor(first).catch(() => undefined);
        const seen = new Set<number | null>();
        await Promise.all(keys.map((k) => {
          const sh = this.shardOf(k);
          if (seen.has(sh)) return undefined;
          seen.add(sh);
          return this.sessionFor(k).catch(() => undefined);
        }));
      },
      shards: () => this.shards,
      learnShards: (S) => {
        if (this.shards !== null && this.shards !== S) throw new EkvError('PROTOCOL', 'the ring changed its range count');
        this.shards = S;
      },
      floor: this.floor,
    };
  }

  /** The connection to one node by address (for attestation inspection and tests). */
  node(addr: string): NodeConnection {
    return this.connection(addr);
  }

  async close(): Promise<void> {
    for (const c of this.byAddr.values()) c.close();
    this.floor?.save();
  }

  /**
   * Send to the routed node; if it cannot be reached (it left, or died) or answers UNAVAILABLE, try the other
   * configured nodes, which forward inside the ring to the range's owner. A refusal (UNATTESTED, TAMPERED,
   * FORBIDDEN, ...) is never retried elsewhere. A write (it carries its range session's (session, seq), `args.s`)
   * is also retried after a TIMEOUT: the same id makes it apply once, wherever it lands.
   */
  private async callRouted(key: Buffer | RangeTarget, op: string, args: Record<string, unknown>, sent: Via = { count: 0 }, send: Send = directSend) {
    // A range moving to a new owner is unavailable for a few seconds (failure suspicion, then the old owner's
    // read lease): keep trying, every node in turn, for up to one request timeout (each try is the same request).
    const until = Date.now() + this.timeoutMs;
    for (let round = 0; ; round++) {
      let first: NodeConnection | null = null;
      let last: unknown;
      try {
        first = this.byAddr.size === 1 && this.routing !== 'iterative' ? (this.conns[0] as NodeConnection) : await this.route(key);
        sent.count++;
        sent.conn = first;
        return await send(first, op, args);
      } catch (err) {
        if (!retriable(err, args)) throw err;
        last = err;
        for (const c of this.conns) {
          if (c === first) continue;
          try {
            sent.count++;
            sent.conn = c;
            return await send(c, op, args);
          } catch (e) {
            if (!retriable(e, args)) throw e;
            last = e;
          }
        }
      }
      if (Date.now() + 250 >= until || (last as EkvError).code === 'TIMEOUT') throw last;
      await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** round, 1000)));
    }
  }

  private async route(key: Buffer | RangeTarget): Promise<NodeConnection> {
    if (this.byAddr.size === 1 && this.routing !== 'iterative') return this.conns[0] as NodeConnection; // nothing to choose
    if (!Buffer.isBuffer(key)) {
      // A whole range (scans): the first node at or after its start, once the range count is known.
      const start = this.shards === null ? null : (BigInt(key.shard) << 256n) / BigInt(this.shards);
      const at = start === null ? null : this.cachedOwner(Buffer.from(start.toString(16).padStart(64, '0'), 'hex'));
      return at ?? (this.conns[key.shard % this.conns.length] as NodeConnection);
    }
    const hex = hash('sha256', key, 'hex');
    const any = this.conns[parseInt(hex.slice(0, 8), 16) % this.conns.length] as NodeConnection;
    if (this.routing === 'iterative') return this.walk(key, any);
    if (this.routing === 'cached') return this.cachedOwner(this.rangeStart(key) ?? Buffer.from(hex, 'hex')) ?? any;
    return any;
  }

  /**
   * The point a key's owner is found from: its range's start once the range count is known (a range's owner is
   * the first node at or after its start, docs/consistency.md), else the key's own hash. Only a guess: a node
   * that does not own the range forwards to the one that does.
   */
  private rangeStart(key: Buffer): Buffer | null {
    const shard = this.shardOf(key);
    if (shard === null || this.shards === null) return null;
    const start = (BigInt(shard) << 256n) / BigInt(this.shards);
    return Buffer.from(start.toString(16).padStart(64, '0'), 'hex');
  }

  private readonly ids = new WeakMap<Buffer, bigint>();

  /** A connected node's ring id (SHA-256 of its attested identity key), computed once per identity. */
  private ringId(c: NodeConnection): bigint | null {
    const key = c.identityKey;
    if (!key) return null;
    let id = this.ids.get(key);
    if (id === undefined) {
      id = BigInt('0x' + createHash('sha256').update(key).digest('hex'));
      this.ids.set(key, id);
    }
    return id;
  }

  /** The verified node whose ring id is the first at or after the key's id, among the nodes this client knows. */
  private cachedOwner(keyHash: Buffer): NodeConnection | null {
    let best: { d: bigint; c: NodeConnection } | null = null;
    const k = BigInt('0x' + keyHash.toString('hex'));
    for (const c of this.byAddr.values()) {
      const id = this.ringId(c);
      if (id === null) continue;
      const d = (id - k) & ringIdMask; // clockwise distance from the key to the node
      if (!best || d < best.d) best = { d, c };
    }
    return best?.c ?? null;
  }

  /** Iterative lookup: ask each node for the next hop; every hop is a node this client verified itself. */
  private async walk(key: Buffer, start: NodeConnection): Promise<NodeConnection> {
    let at = start;
    for (let step = 0; step < iterativeStepsMax; step++) {
      const r = await at.call('route', { k: key });
      if (r.r === 'owner') {
        this.lastRoute = { addr: at.addr, steps: step };
        return at;
      }
      if (r.r !== 'next' || typeof r.addr !== 'string' || !(r.id instanceof Uint8Array) || r.id.length !== 32) {
        throw new EkvError('PROTOCOL', 'malformed route answer');
      }
      const next = this.connection(r.addr);
      await next.ensure();
      if (this.ringId(next) !== BigInt('0x' + Buffer.from(r.id).toString('hex'))) {
        next.close();
        throw new EkvError('UNATTESTED', `the node at ${r.addr} is not the ring member ${Buffer.from(r.id).toString('hex').slice(0, 12)}`, { reason: 'WRONG_NODE' });
      }
      at = next;
    }
    throw new EkvError('UNAVAILABLE', `no owner within ${iterativeStepsMax} steps`);
  }

  private connection(addr: string): NodeConnection {
    const known = this.byAddr.get(addr);
    if (known) return known;
    if (this.byAddr.size >= knownNodesMax) throw new EkvError('UNAVAILABLE', 'too many nodes');
    const c = this.makeConn(addr);
    this.byAddr.set(addr, c);
    return c;
  }
}

/**
 * The addresses and the trust policy connect() would use, and where each part of the policy came from
 * (`ekv status` prints it). Addresses come from the cluster file or `nodes`; the policy is never a merge
 * of the caller's and the file's (client/trust.ts resolveTrust).
 */
export function resolveConnect(opts: ConnectOptions): { addrs: string[]; trust: ResolvedTrust } {
  if (opts.cluster !== undefined) {
    const c = typeof opts.cluster === 'string' ? loadCluster(opts.cluster) : opts.cluster;
    const trust = resolveTrust({ trust: opts.trust, fileTrust: c.trust, trustClusterFile: opts.trustClusterFile });
    return { addrs: c.nodes.map((n) => n.addr), trust };
  }
  if (opts.nodes) return { addrs: opts.nodes, trust: resolveTrust({ trust: opts.trust, trustClusterFile: opts.trustClusterFile }) };
  throw new EkvError('BAD_REQUEST', 'connect: give either cluster or nodes');
}

export async function connect(opts: ConnectOptions): Promise<EkvClient> {
  const { addrs, trust } = resolveConnect(opts);
  const floor = opts.floor === false ? null : new Floor(opts.floorFile ? { file: opts.floorFile } : {});
  return new EkvClient(addrs, trust.policy, {
    floor,
    timeoutMs: opts.timeoutMs ?? 10_000,
    ...(opts.identity ? { identity: opts.identity } : {}),
    ...(opts.routing ? { routing: opts.routing } : {}),
  });
}
