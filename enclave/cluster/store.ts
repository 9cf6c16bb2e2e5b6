/**
 * The replicated key-value layer on top of the ring.
 *
 * A key is owned by successor(SHA-256(key)) and lives on the owner and its
 * next R-1 successors. The owner orders writes (per-key versions), applies
 * each locally, sends it to every replica and acknowledges once every live
 * replica answered (one that does not answer in time is taken as dead; the
 * ring drops it and re-replication restores R copies). Reads are served by
 * the owner, which holds every acknowledged write.
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
import { localDelete, localGet, localPut } from '../kv/service.ts';
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

type WireEntry = [Uint8Array, Uint8Array | null, number];

export interface StoreStats {
  forwards: number;
  replicationFailures: number;
  syncPushed: number;
  pulls: number;
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
}

export class ClusterStore {
  access: AccessCheck | null = null;
  serving: boolean;
  readonly stats: StoreStats = { forwards: 0, replicationFailures: 0, syncPushed: 0, pulls: 0 };
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
      /** Called after every local change (sealing hooks in here). */
      onApply?: (key: Buffer, value: Buffer | null, version: number) => Promise<void> | void;
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
  /** Test-only (EKV_TEST_SEAM=any-pull-source, emulator only): serve after a pull whether or not a source vouched. */
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
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      try {
        if (this.owns(kid)) return await this.ownerOp(op, key, kid, value, o);
        if (hops >= forwardHopsMax) throw new EkvError('UNAVAILABLE', 'too many forwarding hops (the ring is changing)');
        const { owner } = await this.c.ring.lookup(kid);
        if (owner.id === this.c.self.id) return await this.ownerOp(op, key, kid, value, o);
        this.stats.forwards++;
        const fwd = { fo: op, k: key, v: value, h: hops + 1, p: o.principal, x: o.internal === true };
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

  private async ownerOp(op: 'get' | 'put' | 'del', key: Buffer, kid: bigint, value: Buffer | null, o: OpOptions): Promise<RpcResult> {
    if (!this.serving) throw new EkvError('UNAVAILABLE', 'this node is still receiving its keys');
    if (!this.owns(kid)) throw new EkvError('UNAVAILABLE', 'ownership of this key is moving');
    if (!o.internal && this.access) await this.access.check(op, key, o.principal);
    const p = this.c.partition;
    if (op === 'get') return localGet(p, key);
    const e = op === 'put' ? localPut(p, key, value as Buffer) : localDelete(p, key);
    // Durable here (sealed log) and on every replica target before the client hears OK.
    await Promise.all([this.c.onApply?.(key, e.value, e.version), this.replicate([[key, e.value, e.version]])]);
    return { n: e.version };
  }

  /**
   * A write is acknowledged only once each of the owner's current R-1 replica targets (its first
   * R-1 successors) holds it. A target that does not answer is asked again; if the ring meanwhile
   * replaces it (it was found dead), its replacement must acknowledge instead, so an acknowledged
   * write always has R copies however failures are detected, and a host that fakes a failure can
   * only delay or fail writes, not thin them out. Past the deadline the write fails with UNAVAILABLE
   * (its outcome is unknown to the client, as with any timeout).
   */
  private async replicate(entries: WireEntry[]): Promise<void> {
    const deadline = Date.now() + replicateDeadlineMs;
    const acked = new Set<bigint>();
    for (;;) {
      const pending = this.replicaTargets().filter((t) => !acked.has(t.id));
      if (pending.length === 0) return;
      await Promise.all(
        pending.map((t) =>
          this.c.peers.call(t.addr, 'rep', { e: entries }, replicateTimeoutMs, t.id).then(
            () => acked.add(t.id),
            (err: unknown) => {
              this.stats.replicationFailures++;
              this.c.logger.debug({ to: t.addr, err: (err as Error).message }, 'replica did not acknowledge');
            },
          ),
        ),
      );
      if (this.replicaTargets().every((t) => acked.has(t.id))) return;
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
        return this.clientOp(o, key, value, { principal, hops, internal: req.x === true });
      }
      case 'rep':
        return { n: await this.applyEntries(req.e) };
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

  private async applyEntries(raw: unknown): Promise<number> {
    if (!Array.isArray(raw) || raw.length > batchEntriesMax) throw new EkvError('BAD_REQUEST', 'bad replica batch');
    let applied = 0;
    const durable: Array<Promise<void> | void> = [];
    for (const item of raw) {
      if (!Array.isArray(item) || item.length !== 3) throw new EkvError('BAD_REQUEST', 'bad replica entry');
      const [k, v, n] = item as unknown[];
      const key = wireKey(k);
      const value = v === null ? null : wireValue(v);
      if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new EkvError('BAD_REQUEST', 'bad version');
      if (this.c.partition.apply(key, { value, version: n })) {
        applied++;
        durable.push(this.c.onApply?.(key, value, n));
      }
    }
    await Promise.all(durable);
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
    return { e: batch.map(toWire), more, v: this.serving || (this.hasServed && req.sv === true) };
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
      await this.applyEntries(r.e);
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
        await this.c.peers.call(t.addr, 'rep', { e: batch.map(toWire) }, 10_000, t.id);
        this.stats.syncPushed += batch.length;
      }
      return true;
    } catch (err) {
      this.c.logger.debug({ to: t.addr, err: (err as Error).message }, 'sync push failed');
      return false;
    }
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

