/**
 * The replicated key-value layer on top of the ring.
 *
 * A key is owned by successor(SHA-256(key)) and lives on the owner and its
 * next R-1 successors. The owner orders writes (per-key versions, one write
 * per key at a time), makes each durable in its sealed log and sends it to
 * every replica (which make it durable before they answer), applies it only
 * once its own log holds it, and acknowledges once every replica target did.
 * Reads are served by the owner, which holds every acknowledged write.
 *
 * Durability fails closed: a node whose sealed log cannot persist answers
 * UNAVAILABLE (outcome unknown) to everything until it has sealed its whole
 * state again (Persistence.recover), which it retries by itself. Writes carry
 * a request id (requests.ts) so that retries apply once, and may carry a
 * compare-and-set version (`ifVersion`, 0 = only if absent).
 *
 * Membership changes:
 * - join: a new node serves nothing until it has pulled the keys of
 *   (predecessor, self] from its successor; the pull makes the successor
 *   accept the new node as predecessor first, so it stops taking writes for
 *   that range before it answers.
 * - crash: the successor inherits the range (it holds replicas of it) and the
 *   periodic sync pushes every owned key to the current R-1 successors.
 * - leave: the node pushes what it owns to its successor, then leaves.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { keyBytesMax, valueBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import { type Partition, type StoredEntry } from '../kv/partition.ts';
import { localGet } from '../kv/service.ts';
import type { LogEntry } from '../persist.ts';
import {
  forwardedRequestId, keyTagOf, RequestTable, requestIdToWire, rowsPerBatchMax, wireRequestId, type RequestId, type WriteResult,
} from './requests.ts';
import {
  betweenOpen, idFromBytes, idToBytes, inRange, replicaSet, keyId, nodeIdFromPublicKey, responsibleRange, route, type NodeRef, type RingEvent,
} from '../ring/index.ts';
import type { PeerPool } from './peers.ts';
import type { RingDriver } from './ring-driver.ts';

export const forwardHopsMax = 4;
export const clientOpDeadlineMs = 8000;
export const replicateTimeoutMs = 2000;
/** How long a write waits for a silent replica to answer or be declared dead. */
export const replicateDeadlineMs = 6000;
export const syncIntervalMs = 1000;
export const batchBytesMax = 256 * 1024;
/** How often a node looks for copies it no longer needs to hold (after joins and re-replication). */
export const gcIntervalMs = 3000;
/** Stray copies are collected only after this node's neighbourhood has been quiet this long. */
export const gcQuietMs = 5000;
export const batchEntriesMax = 4096;
/** How often a node whose sealed log failed tries to seal its state again. */
export const recoverIntervalMs = 500;

/** [key, value | null, version] or, for a client write, [key, value | null, version, [session, seq]]. */
type WireEntry = [Uint8Array, Uint8Array | null, number] | [Uint8Array, Uint8Array | null, number, [Uint8Array, number]];

/** The node's sealed log, as the store needs it (enclave/persist.ts). */
export interface Durability {
  /** False while the log cannot persist. */
  readonly healthy: boolean;
  /** Durable when resolved. */
  record(entries: LogEntry[]): Promise<void>;
  /** Seal the whole state again (the partition plus `extra`); throws while the host still fails. */
  recover(extra: LogEntry[]): Promise<void>;
}

export interface StoreStats {
  forwards: number;
  replicationFailures: number;
  syncPushed: number;
  pulls: number;
  /** Writes that could not be made durable here (the sealed log failed). */
  persistFailures: number;
  /** Times the sealed log was sealed again after a failure. */
  recoveries: number;
  /** Retried writes answered from the request table. */
  retriesAnswered: number;
  /** Replica entries refused because this node holds another write at that version (or a newer one). */
  conflicts: number;
}

/**
 * Access control, checked by the node that serves a key (its owner) before it
 * serves it. `principal` is the client's proven key (null: anonymous); for a
 * forwarded request it is what the forwarding peer enclave proved, which we
 * believe because the peer is attested. `internal` operations (the access
 * module's own documents under reserved keys) are not checked.
 */
export interface AccessCheck {
  check(op: 'get' | 'put' | 'del', key: Buffer, principal: Buffer | null): Promise<void> | void;
}

export interface OpOptions {
  principal: Buffer | null;
  hops: number;
  /** Skip the access check: only for the enclave's own internal documents. */
  internal?: boolean;
  /** The client's request id (writes): a retry with the same id returns the first outcome. */
  rid?: RequestId | null;
  /** Compare-and-set: write only if the key's current version is this (0: only if absent). */
  ifVersion?: number;
}

/** Codes that mean "outcome unknown, try again": one definition for the forwarding loop. */
function resultOf(e: LogEntry): WriteResult {
  return { version: e.version, deleted: e.value === null };
}

/** A write's answer: { n: version } for a put, { n, d } for a delete (d: whether it removed a value). */
function answerOf(r: WriteResult): RpcResult {
  return r.deleted ? { n: r.version, d: true } : { n: r.version };
}

function sameValue(a: Buffer | null, b: Buffer | null): boolean {
  return a === null || b === null ? a === b : a.equals(b);
}

function toWireEntry(e: LogEntry): WireEntry {
  return e.rid ? [e.key, e.value, e.version, requestIdToWire(e.rid)] : [e.key, e.value, e.version];
}

function wireEntry(item: unknown): LogEntry {
  if (!Array.isArray(item) || item.length < 3 || item.length > 4) throw new EkvError('BAD_REQUEST', 'bad replica entry');
  const [k, v, n, r] = item as unknown[];
  const key = wireKey(k);
  const value = v === null ? null : wireValue(v);
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new EkvError('BAD_REQUEST', 'bad version');
  return { key, value, version: n, rid: wireRequestId(r) };
}

/** A compare-and-set version from the wire: 0 (only if absent) or a version. */
export function wireIfVersion(x: unknown): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new EkvError('BAD_REQUEST', 'bad ifVersion');
  return x;
}

export class ClusterStore {
  access: AccessCheck | null = null;
  serving: boolean;
  readonly stats: StoreStats = {
    forwards: 0, replicationFailures: 0, syncPushed: 0, pulls: 0, persistFailures: 0, recoveries: 0, retriesAnswered: 0, conflicts: 0,
  };
  /** Owner writes whose local persist failed: their outcome is unknown; applied once the log recovers. */
  private readonly inDoubt = new Map<string, LogEntry>();
  private recovering: NodeJS.Timeout | null = null;
  /** One write per key at a time on the owner (the tail of each key's queue). */
  private readonly keyQueues = new Map<string, Promise<void>>();
  private readonly synced = new Map<bigint, number>();
  private syncTimer: NodeJS.Timeout | null = null;
  private syncing = false;
  private collecting = false;
  /** Whether the successor list was empty before the latest change (a node alone owns everything). */
  private aloneBefore = true;
  /** When this node's neighbourhood last changed (stray copies are collected only once it is quiet). */
  private lastChange = Date.now();
  private gcTimer: NodeJS.Timeout | null = null;
  private pulling = false;

  constructor(
    private readonly c: {
      partition: Partition;
      ring: RingDriver;
      peers: PeerPool;
      self: NodeRef;
      replicas: number;
      logger: Logger;
      /** The sealed log (none: an unsealed node, whose writes are durable only on the ring). */
      durable?: Durability;
      /** Recent request ids and their results. */
      requests: RequestTable;
      /** Called the first time this node serves (sealing records it: docs/membership.md). */
      onFirstServing?: () => Promise<void> | void;
    },
    serving: boolean,
    /**
     * Whether this node has ever served in its ring (sealed). A pulling node starts serving only if a source
     * vouched for its answer (docs/membership.md): the source serves, or both have served before (a ring
     * restarting as a whole), or the puller itself served during this boot (a live member whose range grew).
     * A node that never served vouches for nothing, so a restored old copy cannot reconcile against fresh
     * nodes the host joins to it, and fresh nodes cannot take its old state as the ring's.
     */
    hasServed: boolean,
  ) {
    this.serving = false;
    this.hasServed = hasServed;
    if (serving) this.startServing();
    c.ring.onEvent((e) => this.onRingEvent(e));
  }

  private hasServed: boolean;
  /** This node served during this boot: it has been a live member throughout, not a restored copy. */
  private servedThisBoot = false;
  /** Test seam (image-config testAnyPullSource, compiled in; never on Nitro): serve after a pull whether or not a source vouched. */
  anyPullSource = false;

  private startServing(): void {
    this.serving = true;
    this.servedThisBoot = true;
    if (this.hasServed) return;
    this.hasServed = true;
    void Promise.resolve(this.c.onFirstServing?.()).catch((err: unknown) => this.c.logger.error({ err: (err as Error).message }, 'could not record serving'));
  }

  start(): void {
    this.syncTimer = setInterval(() => void this.sync(), syncIntervalMs);
    this.syncTimer.unref();
    this.gcTimer = setInterval(() => void this.collect(), gcIntervalMs);
    this.gcTimer.unref();
  }

  stop(): void {
    if (this.syncTimer) clearInterval(this.syncTimer);
    if (this.gcTimer) clearInterval(this.gcTimer);
    if (this.recovering) clearInterval(this.recovering);
    this.recovering = null;
  }

  // ------------------------------------------------------------ durability

  /** Whether this node can persist: false while its sealed log is broken or writes are in doubt. */
  get durableNow(): boolean {
    return this.inDoubt.size === 0 && (this.c.durable?.healthy ?? true);
  }

  /**
   * Refuse while the sealed log cannot persist; with `key`, also while that key has a write in doubt
   * (its outcome is unknown until it is durable on every replica target, or dropped).
   */
  private failClosed(key?: Buffer): void {
    if (!(this.c.durable?.healthy ?? true)) throw new EkvError('UNAVAILABLE', 'this node cannot persist writes now (its sealed log failed); the outcome of its last writes is unknown');
    if (key && this.inDoubt.has(key.toString('latin1'))) throw new EkvError('UNAVAILABLE', 'the last write of this key is in doubt (not yet on every replica): its outcome is unknown');
  }

  /** Make entries durable here; on failure the node fails closed and starts recovering. */
  private async persist(entries: LogEntry[], owner: boolean): Promise<void> {
    if (!this.c.durable || entries.length === 0) return;
    try {
      await this.c.durable.record(entries);
    } catch (err) {
      this.stats.persistFailures += entries.length;
      // The owner's own writes may already be on replicas (and even on the host's disk): keep them, to
      // apply once the log is sealed again. A replica's copy is simply not acknowledged.
      if (owner) for (const e of entries) this.keepInDoubt(e);
      this.startRecovering();
      this.c.logger.warn({ err: (err as Error).message }, 'sealed log write failed: failing closed until it recovers');
      throw new EkvError('UNAVAILABLE', 'this node could not persist the write (its sealed log failed): outcome unknown');
    }
  }

  private keepInDoubt(e: LogEntry): void {
    const k = e.key.toString('latin1');
    const have = this.inDoubt.get(k);
    if (!have || have.version < e.version) this.inDoubt.set(k, e);
  }

  private startRecovering(): void {
    if (this.recovering) return;
    let busy = false;
    this.recovering = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.recoverOnce().finally(() => (busy = false));
    }, recoverIntervalMs);
    this.recovering.unref();
  }

  /**
   * One attempt to seal the state again, then to settle the writes in doubt. The log is sealed again
   * without them (the host may or may not have landed their records: the fresh snapshot covers that
   * range). Each is then made durable like a new write (own log, and strict `rep` to every current
   * replica target) and applied only once all of them hold it: until then its key stays refused, so no
   * read returns a version held by one copy. One that a replica refuses (another write holds that
   * version, or a newer one) or that something newer superseded here is dropped: it was never
   * acknowledged, and its request id stays unknown here (a retry of it is EXPIRED, not applied again).
   */
  async recoverOnce(): Promise<boolean> {
    const durable = this.c.durable;
    if (durable && !durable.healthy) {
      try {
        await durable.recover([]);
      } catch (err) {
        this.c.logger.debug({ err: (err as Error).message }, 'sealed log still failing');
        return false;
      }
      this.stats.recoveries++;
      this.c.logger.warn({ inDoubt: this.inDoubt.size }, 'sealed log recovered: serving again (keys with a write in doubt once it is replicated)');
    }
    // Each key on its own: one that cannot settle yet (a silent replica, ownership moving) holds up no other.
    for (const e of [...this.inDoubt.values()]) await this.serialized(e.key, () => this.settleInDoubt(e)).catch(() => false);
    if (this.inDoubt.size > 0 || !(durable?.healthy ?? true)) return false;
    if (this.recovering) clearInterval(this.recovering);
    this.recovering = null;
    return true;
  }

  /** Make one write in doubt durable here and on every replica target, then apply it; false: still in doubt. */
  private async settleInDoubt(e: LogEntry): Promise<boolean> {
    const k = e.key.toString('latin1');
    if (this.inDoubt.get(k) !== e) return true;
    const kid = keyId(e.key);
    const cur = this.c.partition.get(e.key);
    const drop = (why: string) => {
      this.inDoubt.delete(k);
      this.c.logger.warn({ version: e.version, why }, 'a write in doubt was dropped (never acknowledged)');
      return true;
    };
    if (cur && cur.version >= e.version) return drop('superseded here');
    if (!this.owns(kid)) return false; // wait for the ring to settle (the key stays refused here)
    await this.persist([e], true);
    try {
      await this.replicate([toWireEntry(e)], true);
    } catch (err) {
      if (err instanceof EkvError && err.code === 'CONFLICT') return drop(err.message);
      return false;
    }
    this.c.partition.apply(e.key, { value: e.value, version: e.version });
    if (e.rid) this.c.requests.add(e.rid, kid, resultOf(e));
    if (this.inDoubt.get(k) === e) this.inDoubt.delete(k);
    return true;
  }

  /** Run `f` after every earlier write of this key on this node finished. */
  private async serialized<T>(key: Buffer, f: () => Promise<T>): Promise<T> {
    const k = key.toString('latin1');
    const prev = this.keyQueues.get(k);
    let release!: () => void;
    const tail = new Promise<void>((r) => (release = r));
    this.keyQueues.set(k, tail);
    try {
      if (prev) await prev;
      return await f();
    } finally {
      release();
      if (this.keyQueues.get(k) === tail) this.keyQueues.delete(k);
    }
  }

  /**
   * Drop copies this node holds but is no longer among the R holders of (its range moved to a joined node,
   * or re-replication put the key on another node after a failure). A copy is dropped only after the
   * key's current owner, found by a lookup, has been sent it (it keeps the newer version) and only when
   * the owner's view names R holders without us.
   */
  async collect(): Promise<number> {
    const core = this.c.ring.core;
    if (this.collecting || !this.serving || core.status !== 'active' || core.predecessor === null) return 0;
    if (Date.now() - this.lastChange < gcQuietMs) return 0;
    this.collecting = true;
    let dropped = 0;
    try {
      const mine = responsibleRange(core.predecessor, this.c.self);
      const views: Array<{ start: bigint; end: bigint; holders: NodeRef[]; stray: StoredEntry[] }> = [];
      for (const e of [...this.c.partition.entries()]) {
        const kid = keyId(e.key);
        if (inRange(kid, mine)) continue;
        let view = views.find((v) => inRange(kid, v));
        if (!view) {
          const r = await this.c.ring.lookup(kid).catch(() => null);
          if (!r || r.predecessor === null || r.owner.id === this.c.self.id) continue;
          const holders = [r.owner, ...r.successors.filter((n) => n.id !== r.owner.id)].slice(0, this.c.replicas);
          if (holders.length < this.c.replicas) continue; // a ring smaller than R: everyone holds everything
          view = { start: r.predecessor.id, end: r.owner.id, holders, stray: [] };
          views.push(view);
        }
        if (inRange(kid, view) && !view.holders.some((h) => h.id === this.c.self.id)) view.stray.push(e);
      }
      for (const v of views) {
        if (v.stray.length === 0) continue;
        // Every holder gets our copy first (each keeps the newer version), so dropping ours never leaves fewer than R.
        const pushed = await Promise.all(v.holders.map((h) => this.push(h, v.stray)));
        if (!pushed.every(Boolean)) continue;
        // And the owner must confirm it owns each key (its own predecessor, not our possibly stale view).
        const owner = v.holders[0] as NodeRef;
        const confirmed = new Set<string>();
        for (let i = 0; i < v.stray.length; i += batchEntriesMax) {
          const part = v.stray.slice(i, i + batchEntriesMax);
          const r = await this.c.peers.call(owner.addr, 'owns', { k: part.map((e) => e.key) }, replicateTimeoutMs, owner.id).catch(() => null);
          const flags = r && Array.isArray(r.o) ? (r.o as unknown[]) : [];
          part.forEach((e, j) => flags[j] === true && confirmed.add(e.key.toString('latin1')));
        }
        for (const e of v.stray) {
          if (!confirmed.has(e.key.toString('latin1'))) continue;
          if (this.c.partition.get(e.key)?.version !== e.version) continue; // something newer arrived meanwhile
          this.c.partition.remove(e.key);
          dropped++;
        }
      }
      if (dropped > 0) this.c.logger.info({ dropped }, 'dropped copies this node no longer holds');
      return dropped;
    } finally {
      this.collecting = false;
    }
  }

  // ------------------------------------------------------------ ownership

  owns(kid: bigint): boolean {
    const core = this.c.ring.core;
    if (core.status !== 'active') return false;
    // The core treats a node with no known predecessor as owning everything (right for a ring of one).
    // For data that would serve keys this node may not hold, so until the ring tells it its new
    // predecessor (after the old one died) it owns nothing unless it is alone.
    if (core.predecessor === null) return core.successors.length === 0;
    return inRange(kid, responsibleRange(core.predecessor, this.c.self));
  }

  /** The R-1 distinct successors that hold replicas of what this node owns. */
  replicaTargets(): NodeRef[] {
    return replicaSet(this.c.self, this.c.ring.core.successors, this.c.replicas).slice(1);
  }

  // ------------------------------------------------------------ client operations

  /** get/put/del from a client (or forwarded by a peer): served here if owned, else forwarded to the owner. */
  async clientOp(op: 'get' | 'put' | 'del', key: Buffer, value: Buffer | null, o: OpOptions): Promise<RpcResult> {
    const hops = o.hops;
    const kid = keyId(key);
    const deadline = Date.now() + clientOpDeadlineMs;
    let lastErr: EkvError | null = null; // built only on failure: an Error's stack trace is not free
    // Once an attempt of this write may have reached an owner, the next ones are retries (requests.ts).
    let reached = false;
    const reach = () => (reached = true);
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      const oa = reached && o.rid && !o.rid.retry ? { ...o, rid: { ...o.rid, retry: true } } : o;
      try {
        if (this.owns(kid)) return await this.ownerOp(op, key, kid, value, oa, reach);
        if (hops >= forwardHopsMax) throw new EkvError('UNAVAILABLE', 'too many forwarding hops (the ring is changing)');
        const { owner } = await this.c.ring.lookup(kid);
        if (owner.id === this.c.self.id) return await this.ownerOp(op, key, kid, value, oa, reach);
        this.stats.forwards++;
        const fwd = {
          fo: op, k: key, v: value, h: hops + 1, p: o.principal, x: o.internal === true,
          ...(oa.rid ? { r: forwardedRequestId(oa.rid) } : {}), ...(o.ifVersion === undefined ? {} : { iv: o.ifVersion }),
        };
        if (op !== 'get') reach();
        return await this.c.peers.call(owner.addr, 'fwd', fwd, clientOpDeadlineMs, owner.id);
      } catch (err) {
        if (!(err instanceof EkvError) || !retryable(err)) throw err;
        lastErr = err;
        if (hops > 0) throw err; // the node that first took the request retries, not every hop
        await sleep(Math.min(50 * 2 ** attempt, 500));
      }
    }
    throw lastErr ?? new EkvError('UNAVAILABLE', 'no owner reachable');
  }

  private async ownerOp(op: 'get' | 'put' | 'del', key: Buffer, kid: bigint, value: Buffer | null, o: OpOptions, reach?: () => void): Promise<RpcResult> {
    this.checkOwner(kid, key);
    if (!o.internal && this.access) await this.access.check(op, key, o.principal);
    if (op === 'get') {
      this.checkOwner(kid, key); // the access check may have waited
      return localGet(this.c.partition, key);
    }
    return this.serialized(key, () => this.ownerWrite(op, key, kid, value, o, reach));
  }

  private checkOwner(kid: bigint, key: Buffer): void {
    this.failClosed(key);
    if (!this.serving) throw new EkvError('UNAVAILABLE', 'this node is still receiving its keys');
    if (!this.owns(kid)) throw new EkvError('UNAVAILABLE', 'ownership of this key is moving');
  }

  /**
   * One write, alone for its key on this node: answered from the request table if it is a retry;
   * else checked (compare-and-set), made durable here and on every replica target, and only then
   * applied and acknowledged. Its version is the key's next; a delete of a key without a value
   * changes nothing and says so (d: false).
   */
  private async ownerWrite(op: 'put' | 'del', key: Buffer, kid: bigint, value: Buffer | null, o: OpOptions, reach?: () => void): Promise<RpcResult> {
    this.checkOwner(kid, key); // the queue may have waited
    const rid = o.rid ?? null;
    const earlier = rid ? this.c.requests.lookup(rid, kid) : null;
    if (earlier) return this.answerRetry(key, earlier);
    const cur = this.c.partition.get(key);
    const current = cur && cur.value !== null ? cur.version : 0;
    if (o.ifVersion !== undefined && o.ifVersion !== current) {
      throw new EkvError('CONFLICT', `the key's version is ${current}, not ${o.ifVersion}`, { version: current });
    }
    if (op === 'del' && current === 0) return { n: 0, d: false };
    const e: LogEntry = { key, value: op === 'put' ? (value as Buffer) : null, version: (cur?.version ?? 0) + 1, rid };
    // Durable here (sealed log) and on every replica target before the client hears OK; applied here
    // only once durable here, so no read returns what a crash could take back.
    reach?.();
    const [here, there] = await Promise.allSettled([this.persist([e], true), this.replicate([toWireEntry(e)])]);
    if (here.status === 'rejected') throw here.reason;
    if (there.status === 'rejected') {
      // Durable here but not on every replica target: in doubt, not applied (no read may return a
      // version one copy holds); the key stays refused until the replicas hold it (recoverOnce).
      this.keepInDoubt(e);
      this.startRecovering();
      throw there.reason;
    }
    this.c.partition.apply(key, { value: e.value, version: e.version });
    if (rid) this.c.requests.add(rid, kid, resultOf(e));
    return answerOf(resultOf(e));
  }

  /**
   * A retry of a write this node already knows: its first answer, once the key's current entry is
   * on every replica target again (the first attempt may have failed there; this node may have
   * learnt the id as a replica, or from its log after a restart).
   */
  private async answerRetry(key: Buffer, earlier: WriteResult): Promise<RpcResult> {
    this.stats.retriesAnswered++;
    const cur = this.c.partition.get(key);
    if (cur) await this.replicate([[key, cur.value, cur.version]]);
    return answerOf(earlier);
  }

  /**
   * A write is acknowledged only once each of the owner's current R-1 replica targets (its first
   * R-1 successors) holds it. A target that does not answer is asked again; if the ring meanwhile
   * replaces it (it was found dead), its replacement must acknowledge instead, so an acknowledged
   * write always has R copies however failures are detected, and a host that fakes a failure can
   * only delay or fail writes, not thin them out. Past the deadline the write fails with UNAVAILABLE
   * (its outcome is unknown to the client, as with any timeout).
   */
  private async replicate(entries: WireEntry[], settling = false): Promise<void> {
    const deadline = Date.now() + replicateDeadlineMs;
    const acked = new Set<bigint>();
    const conflicts: EkvError[] = [];
    for (;;) {
      const pending = this.replicaTargets().filter((t) => !acked.has(t.id));
      if (pending.length === 0) return;
      // w: a client write, checked strictly (a replica holding another write at this version, or a
      // newer one, refuses it with CONFLICT instead of keeping its own and answering OK).
      await Promise.all(
        pending.map((t) =>
          this.c.peers.call(t.addr, 'rep', { e: entries, w: true }, replicateTimeoutMs, t.id).then(
            () => acked.add(t.id),
            (err: unknown) => {
              this.stats.replicationFailures++;
              if (err instanceof EkvError && err.code === 'CONFLICT') conflicts.push(err);
              this.c.logger.debug({ to: t.addr, err: (err as Error).message }, 'replica did not acknowledge');
            },
          ),
        ),
      );
      // Settling a write in doubt: one round (the recovery timer tries again), and the replica's CONFLICT as it is.
      if (conflicts.length > 0 && settling) throw conflicts[0]!;
      if (conflicts.length > 0) throw new EkvError('UNAVAILABLE', `a replica refused the write: ${conflicts[0]!.message} (outcome unknown)`);
      if (this.replicaTargets().every((t) => acked.has(t.id))) return;
      if (settling) throw new EkvError('UNAVAILABLE', 'a replica did not acknowledge the write in doubt yet');
      if (Date.now() > deadline) throw new EkvError('UNAVAILABLE', 'the replicas did not acknowledge the write');
      await sleep(200);
    }
  }

  // ------------------------------------------------------------ peer operations

  async peerOp(op: string, req: Record<string, unknown>, peerKey: Buffer): Promise<RpcResult> {
    switch (op) {
      case 'ring':
        this.c.ring.receive(req.m, peerKey);
        return {};
      case 'fwd': {
        const o = req.fo;
        if (o !== 'get' && o !== 'put' && o !== 'del') throw new EkvError('BAD_REQUEST', 'bad forwarded op');
        const hops = typeof req.h === 'number' ? req.h : forwardHopsMax;
        const key = wireKey(req.k);
        const value = o === 'put' ? wireValue(req.v) : null;
        const principal = req.p instanceof Uint8Array && req.p.length <= 128 ? Buffer.from(req.p) : null;
        const ifVersion = req.iv === undefined ? {} : { ifVersion: wireIfVersion(req.iv) };
        return this.clientOp(o, key, value, { principal, hops, internal: req.x === true, rid: wireRequestId(req.r), ...ifVersion });
      }
      case 'rep':
        return { n: await this.applyEntries(req.e, req.w === true, req.q) };
      case 'pull':
        return this.answerPull(req, peerKey);
      case 'owns': {
        if (!Array.isArray(req.k) || req.k.length > batchEntriesMax) throw new EkvError('BAD_REQUEST', 'bad owns request');
        return { o: req.k.map((k) => this.serving && this.owns(keyId(wireKey(k)))) };
      }
      default:
        throw new EkvError('BAD_REQUEST', `unknown peer operation ${op.slice(0, 32)}`);
    }
  }

  /**
   * Entries from the owner (a client write: `strict`), a sync push, a pull or a hand-off. Each is
   * made durable here before it is applied and before the answer: an entry this node already holds
   * (same version, same value) is durable already, because nothing is applied before it is durable.
   * Strictly, holding another value at that version, or a newer version, is a CONFLICT: the sender
   * must not count this node as holding its write. Otherwise (sync, pull: copies of copies) the
   * newer version wins and an equal version with another value is kept as it is, and counted.
   */
  private async applyEntries(raw: unknown, strict: boolean, rows?: unknown): Promise<number> {
    if (!Array.isArray(raw) || raw.length > batchEntriesMax) throw new EkvError('BAD_REQUEST', 'bad replica batch');
    if (rows !== undefined && (!Array.isArray(rows) || rows.length > rowsPerBatchMax)) throw new EkvError('BAD_REQUEST', 'bad request-table rows');
    const fresh: LogEntry[] = [];
    const tags = new Set<number>();
    for (const item of raw) {
      const e = wireEntry(item);
      tags.add(keyTagOf(keyId(e.key)));
      const cur = this.c.partition.get(e.key);
      if (!cur || cur.version < e.version) {
        fresh.push(e);
        continue;
      }
      if (cur.version === e.version && sameValue(cur.value, e.value)) {
        // Held already (a sync push may have brought it first): learn the request id all the same.
        if (e.rid) this.c.requests.add(e.rid, keyId(e.key), resultOf(e));
        continue;
      }
      if (cur.version === e.version || strict) {
        this.stats.conflicts++;
        if (strict) throw new EkvError('CONFLICT', `this replica holds ${cur.version === e.version ? 'another write at' : 'a version newer than'} version ${e.version}`);
        this.c.logger.warn({ version: e.version }, 'a pushed copy differs from ours at the same version: keeping ours');
      }
    }
    let applied = 0;
    if (fresh.length > 0) {
      this.failClosed();
      await this.persist(fresh, false);
      for (const e of fresh) {
        if (this.c.partition.apply(e.key, { value: e.value, version: e.version })) applied++;
        if (e.rid) this.c.requests.add(e.rid, keyId(e.key), resultOf(e));
      }
    }
    // The request ids of these keys that the sender knows (a pull, hand-off or sync push), once the
    // entries are held here: a retry of one of them is then answered here instead of refused EXPIRED.
    this.c.requests.mergeRows(rows, tags);
    return applied;
  }

  /**
   * A joining node asks for the keys of (start, end]. We first take it as our
   * predecessor (as notify would), so from now on we forward writes in that
   * range to it instead of accepting them.
   */
  private answerPull(req: Record<string, unknown>, peerKey: Buffer): RpcResult {
    const peerId = nodeIdFromPublicKey(peerKey);
    if (typeof req.addr !== 'string' || req.addr.length > 300) throw new EkvError('BAD_REQUEST', 'pull needs the puller address');
    const core = this.c.ring.core;
    if (req.f === true) {
      // The puller's immediate successor: take it as predecessor first (as notify would), so from now on
      // writes for its range are forwarded to it rather than accepted here.
      this.c.ring.receive(encodeNotify(peerId, req.addr), peerKey);
      if (core.predecessor?.id !== peerId) throw new EkvError('UNAVAILABLE', 'you are not my predecessor');
    }
    const start = idFromBytes(wireKey(req.s));
    const after = req.a instanceof Uint8Array ? Buffer.from(req.a).toString('latin1') : null;
    const range = { start, end: peerId };
    const picked = [...this.c.partition.entries()]
      .filter((e) => inRange(keyId(e.key), range))
      .sort((x, y) => Buffer.compare(x.key, y.key))
      .filter((e) => after === null || e.key.toString('latin1') > after);
    const { batch, more } = takeBatch(picked);
    this.stats.pulls++;
    // Vouch for this answer only when serving, or when both of us served before (a whole-ring restart).
    return { e: batch.map(toWire), more, q: this.rowsOf(batch), v: this.serving || (this.hasServed && req.sv === true) };
  }

  // ------------------------------------------------------------ membership

  private onRingEvent(e: RingEvent): void {
    // A new predecessor changes the range this node owns: entries that were someone else's are now ours
    // to push, whatever their modification numbers, so every replica gets a full push next time.
    if (e.type === 'predecessor_changed') {
      this.synced.clear();
      this.lastChange = Date.now();
      // A range that grew (our old predecessor died or left, or it was a node that joined with a wrong
      // view) holds keys we may not have: stop serving until we have pulled the range again.
      if (this.serving && rangeGrew(e.previous, e.predecessor, this.c.self, this.aloneBefore)) {
        this.serving = false;
        this.c.logger.info({ from: e.previous?.addr ?? null, to: e.predecessor?.addr ?? null }, 'my range grew: pulling it before serving it');
      }
    }
    if (e.type === 'successors_changed') {
      this.lastChange = Date.now();
      this.aloneBefore = e.successors.length === 0;
    }
    if (e.type === 'successors_changed' || e.type === 'predecessor_changed') void this.sync();
    if (!this.serving && (e.type === 'predecessor_changed' || e.type === 'joined' || e.type === 'successors_changed')) void this.pull();
  }

  /**
   * Fetch every key of (predecessor, self] from the first R successors (the union, newest versions
   * win), then serve. Each of them may hold part of the range: the node that owned it before (our
   * immediate successor, after a join) or the replicas of a predecessor that died. The immediate
   * successor first takes us as its predecessor, so it stops accepting writes for the range.
   */
  private async pull(): Promise<void> {
    const core = this.c.ring.core;
    const pred = core.predecessor;
    const sources = core.successors.slice(0, Math.max(1, this.c.replicas));
    if (this.pulling || this.serving || core.status !== 'active' || !pred || sources.length === 0) return;
    this.pulling = true;
    try {
      let vouched = false;
      for (const [i, src] of sources.entries()) vouched = (await this.pullFrom(src, pred, i === 0)) || vouched;
      if (core.predecessor?.id !== pred.id) throw new EkvError('UNAVAILABLE', 'the predecessor changed during the pull');
      if (!vouched && !this.servedThisBoot && !this.anyPullSource) {
        throw new EkvError('UNAVAILABLE', 'no source vouches for my range (none serves; none served before with me)');
      }
      this.startServing();
      this.c.logger.info({ keys: this.c.partition.size, from: sources.map((x) => x.addr) }, 'received my keys; serving');
      void this.sync();
    } catch (err) {
      this.c.logger.warn({ err: (err as Error).message }, 'pull failed; will retry');
      setTimeout(() => void this.pull(), 500).unref();
    } finally {
      this.pulling = false;
    }
  }

  /** Pull (predecessor, self] from `src`; true if it vouched for its answer (see the constructor). */
  private async pullFrom(src: NodeRef, pred: NodeRef, first: boolean): Promise<boolean> {
    let after: Buffer | null = null;
    let vouched = true;
    for (;;) {
      const req = { s: idToBytes(pred.id), addr: this.c.self.addr, f: first, sv: this.hasServed, ...(after ? { a: after } : {}) };
      const r = await this.c.peers.call(src.addr, 'pull', req, 10_000, src.id);
      await this.applyEntries(r.e, false, r.q);
      vouched &&= r.v === true;
      const last = Array.isArray(r.e) && r.e.length > 0 ? (r.e[r.e.length - 1] as WireEntry)[0] : null;
      if (r.more !== true || !last) return vouched;
      after = Buffer.from(last);
    }
  }

  /** Push what this node owns to its replica targets: everything to a new target, changes since the last push otherwise. */
  async sync(): Promise<void> {
    if (this.syncing || !this.serving || this.c.ring.core.status !== 'active') return;
    this.syncing = true;
    try {
      const targets = this.replicaTargets();
      for (const id of [...this.synced.keys()]) if (!targets.some((t) => t.id === id)) this.synced.delete(id);
      const range = responsibleRange(this.c.ring.core.predecessor, this.c.self);
      for (const t of targets) {
        const mark = this.c.partition.mseq;
        const since = this.synced.get(t.id) ?? 0;
        if (since === mark) continue;
        const changed = [...this.c.partition.entries()].filter((e) => e.mseq > since && inRange(keyId(e.key), range));
        if (await this.push(t, changed)) this.synced.set(t.id, mark);
      }
    } finally {
      this.syncing = false;
    }
  }

  private async push(t: NodeRef, entries: StoredEntry[]): Promise<boolean> {
    let rest = entries;
    try {
      while (rest.length > 0) {
        const { batch } = takeBatch(rest);
        rest = rest.slice(batch.length);
        await this.c.peers.call(t.addr, 'rep', { e: batch.map(toWire), q: this.rowsOf(batch) }, 10_000, t.id);
        this.stats.syncPushed += batch.length;
      }
      return true;
    } catch (err) {
      this.c.logger.debug({ to: t.addr, err: (err as Error).message }, 'sync push failed');
      return false;
    }
  }

  /** The request-table rows of a batch's keys (matched by key tag), sent along with it. */
  private rowsOf(batch: StoredEntry[]): unknown[] {
    return this.c.requests.rowsFor(new Set(batch.map((e) => keyTagOf(keyId(e.key)))));
  }

  /** Graceful leave: hand everything owned to the successor, then tell the neighbours. */
  async leave(): Promise<void> {
    const succ = this.c.ring.core.successors[0];
    if (succ && this.serving) {
      const range = responsibleRange(this.c.ring.core.predecessor, this.c.self);
      const owned = [...this.c.partition.entries()].filter((e) => inRange(keyId(e.key), range));
      await this.push(succ, owned);
    }
    this.c.ring.leave();
    await sleep(100);
  }

  status(): RpcResult {
    const core = this.c.ring.core;
    const ref = (n: NodeRef | null | undefined) => (n ? { id: idToBytes(n.id), addr: n.addr } : null);
    return {
      id: idToBytes(this.c.self.id),
      addr: this.c.self.addr,
      ring: core.status,
      serving: this.serving,
      /** False while the sealed log fails (the node answers UNAVAILABLE until it has recovered). */
      durable: this.durableNow,
      served: this.hasServed,
      predecessor: ref(core.predecessor),
      successors: core.successors.map(ref),
      keys: this.c.partition.size,
      replicas: this.c.replicas,
      lookups: this.c.ring.lookupsDone,
      hops: this.c.ring.hopsTotal,
      ...this.stats,
    };
  }

  /** One step of an iterative lookup, for clients that walk the ring themselves. */
  routeStep(key: Buffer): RpcResult {
    const kid = keyId(key);
    if (this.owns(kid)) return { r: 'owner' };
    const r = route(this.c.ring.core, kid, false, null);
    if (r.kind === 'owner') return { r: 'owner' };
    if (r.kind === 'none') throw new EkvError('UNAVAILABLE', 'no route');
    return { r: 'next', id: idToBytes(r.to.id), addr: r.to.addr };
  }
}

/**
 * Did the range (pred, self] grow? It grows when the old predecessor lies strictly inside the new
 * range (it died or left), or when the node owned nothing before (no predecessor, not alone).
 */
export function rangeGrew(previous: NodeRef | null, next: NodeRef | null, self: NodeRef, aloneBefore: boolean): boolean {
  if (next === null) return false; // owns nothing (or alone) until a predecessor is known
  if (previous === null) return !aloneBefore;
  return previous.id !== next.id && betweenOpen(previous.id, next.id, self.id);
}

function retryable(e: EkvError): boolean {
  return e.code === 'UNAVAILABLE' || e.code === 'CLOSED' || e.code === 'TIMEOUT' || e.code === 'UNATTESTED';
}


function toWire(e: StoredEntry): WireEntry {
  return [e.key, e.value, e.version];
}

function takeBatch(entries: StoredEntry[]): { batch: StoredEntry[]; more: boolean } {
  const batch: StoredEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = e.key.length + (e.value?.length ?? 0) + 16;
    if (batch.length > 0 && (bytes + size > batchBytesMax || batch.length >= batchEntriesMax)) break;
    batch.push(e);
    bytes += size;
  }
  return { batch, more: batch.length < entries.length };
}

function wireKey(k: unknown): Buffer {
  if (!(k instanceof Uint8Array) || k.length === 0 || k.length > keyBytesMax) throw new EkvError('BAD_REQUEST', 'bad key');
  return Buffer.from(k);
}

function wireValue(v: unknown): Buffer {
  if (!(v instanceof Uint8Array) || v.length > valueBytesMax) throw new EkvError('BAD_REQUEST', 'bad value');
  return Buffer.from(v);
}

function encodeNotify(id: bigint, addr: string): unknown {
  return { type: 'notify', from: { id: idToBytes(id), addr } };
}

