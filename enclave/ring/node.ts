// RingNode: Chord (Stoica et al., SIGCOMM 2001 / ToN 2003) as a deterministic
// state machine, in the manner of etcd-raft's RawNode. Inputs: tick(), step(msg),
// join(), leave(), lookup(). Outputs: ready() = messages to send + events.
// No I/O, no clock, no Math.random: time is a tick count, randomness is injected.
//
// Failure detection is by request timeout only: a request (get_predecessor, ping,
// closest_preceding, or the per-hop ack of a recursive lookup) unanswered within
// rpcTimeoutTicks is a miss; after suspectAfterMisses consecutive misses (any
// message from the peer resets the count) the peer is removed from the fingers,
// the successor list and the predecessor slot. A lookup never waits for that
// verdict: it routes around the silent hop at once.
import assert from 'node:assert/strict';
import { deadTicks, deadTrackedMax, excludeMax, forwardsInflightMax, hopsMax, lookupsInflightMax, missesTrackedMax } from './constants.ts';
import { type RingConfig, validateConfig } from './config.ts';
import { RingError } from './errors.ts';
import type { DropReason, LookupFailure, LookupMode, RingEvent } from './events.ts';
import { betweenOpen, betweenRightIncl, distance, fingerStart, idMask, isId, pow2 } from './id.ts';
import {
  type ClosestPreceding, type ClosestPrecedingReply, type FindSuccessor, type Found, type Leave, type NodeRef,
  type PredecessorReply, type RingMessage, validateRingMessage,
} from './messages.ts';
import { assertSuccessorOrder, orderSuccessors, route, type RoutingTable } from './routing.ts';

export interface Ready {
  messages: Array<{ to: NodeRef; msg: RingMessage }>;
  events: RingEvent[];
}

export interface RingNodeInit {
  self: NodeRef;
  config: RingConfig;
  /** Uniform in [0, 1); only used to spread timers so nodes do not act in lockstep. */
  rand: () => number;
}

export type RingStatus = 'active' | 'joining' | 'left';

type Purpose = { kind: 'user' } | { kind: 'join' } | { kind: 'finger'; index: number };

interface Lookup {
  key: bigint;
  mode: LookupMode;
  purpose: Purpose;
  deadline: number;
  // Iterative state: the nodes that answered (to fall back to) and the ones found dead.
  trail: Array<{ node: NodeRef; final: boolean }>;
  exclude: bigint[];
  path: bigint[];
}

type Rpc =
  | { kind: 'get_predecessor'; peer: NodeRef; deadline: number }
  | { kind: 'ping'; peer: NodeRef; deadline: number }
  | { kind: 'closest_preceding'; peer: NodeRef; deadline: number; lookup: number; final: boolean };

/** `received` is the lookup as it reached us (final flag as the sender set it): a reroute starts from it. */
interface Forward { to: NodeRef; received: FindSuccessor; deadline: number }

export class RingNode implements RoutingTable {
  readonly self: NodeRef;
  readonly config: Readonly<RingConfig>;
  private readonly rand: () => number;

  status: RingStatus = 'active';
  predecessor: NodeRef | null = null;
  successors: NodeRef[] = [];
  readonly fingers: Array<NodeRef | null>;

  private now = 0;
  private nextId = 1;
  private nextFinger = 0;
  private fingerLookup = false;
  /** The last whole round of fix_fingers changed nothing (and nothing changed since): fix at the idle period. */
  private fingersIdle = false;
  /** Something changed in the finger table, the successor list or membership during the current round. */
  private fingerRoundChanged = false;
  private stabilizeAt: number;
  private fixFingersAt: number;
  private checkPredecessorAt: number;
  private joinRetryAt = 0;
  private joinBootstrap: NodeRef | null = null;
  private readonly rpcs = new Map<number, Rpc>();
  private readonly forwards = new Map<number, Forward>();
  private readonly lookups = new Map<number, Lookup>();
  /** Consecutive unanswered requests per peer; bounded by the peers we have requests out to. */
  private readonly misses = new Map<bigint, number>();
  private outbox: Ready['messages'] = [];
  private events: RingEvent[] = [];
  private readonly drops = new Map<DropReason, number>();
  /** Ids known to be gone, with the tick until which they are refused (see deadTicks). */
  private readonly dead = new Map<bigint, number>();

  /** A new node is a ring of one (Chord's create()); call join() to enter an existing ring. */
  constructor(init: RingNodeInit) {
    this.config = validateConfig(init.config);
    if (!isId(init.self.id)) throw new RingError('BAD_ID', 'self.id out of range');
    this.self = { id: init.self.id, addr: init.self.addr };
    this.rand = init.rand;
    this.fingers = new Array<NodeRef | null>(this.config.fingerBits).fill(null);
    this.stabilizeAt = this.jitter(this.config.stabilizeTicks);
    this.fixFingersAt = this.jitter(this.config.fixFingersTicks);
    this.checkPredecessorAt = this.jitter(this.config.checkPredecessorTicks);
  }

  private jitter(period: number): number {
    const r = this.rand();
    assert.ok(r >= 0 && r < 1, 'rand() must return a number in [0, 1)');
    return 1 + Math.floor(r * period);
  }

  // ---- outputs ----

  ready(): Ready {
    const r = { messages: this.outbox, events: this.events };
    this.outbox = [];
    this.events = [];
    return r;
  }

  hasReady(): boolean {
    return this.outbox.length > 0 || this.events.length > 0;
  }

  stats(): { dropped: Record<string, number>; rpcs: number; forwards: number; lookups: number } {
    return {
      dropped: Object.fromEntries(this.drops),
      rpcs: this.rpcs.size,
      forwards: this.forwards.size,
      lookups: this.lookups.size,
    };
  }

  private send(to: NodeRef, msg: RingMessage): void {
    assert.ok(to.id !== this.self.id, 'a node never sends to itself');
    this.outbox.push({ to, msg });
  }

  private drop(reason: DropReason): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + 1);
  }

  private id(): number {
    return this.nextId++;
  }

  // ---- state changes that keep the invariants ----

  /** The successor list, after the peers' candidates went through orderSuccessors. */
  private isDead(id: bigint): boolean {
    const until = this.dead.get(id);
    return until !== undefined && until >= this.now;
  }

  /**
   * The transport learned that `peer` is gone for sure (its address answers with another attested
   * identity): drop it now rather than after timeouts, and refuse it for deadTicks.
   */
  markDead(peer: NodeRef): void {
    if (peer.id === this.self.id) return;
    this.remember(peer.id);
    this.forget(peer, 'timeout');
  }

  private remember(id: bigint): void {
    if (this.dead.size >= deadTrackedMax) {
      for (const [k, until] of this.dead) if (until < this.now) this.dead.delete(k);
      if (this.dead.size >= deadTrackedMax) this.dead.delete(this.dead.keys().next().value as bigint);
    }
    this.dead.set(id, this.now + deadTicks);
  }

  private setSuccessors(candidates: readonly NodeRef[]): void {
    const alive = this.dead.size === 0 ? candidates : candidates.filter((n) => !this.isDead(n.id));
    const next = orderSuccessors(this.self.id, alive, this.config.successorsMax);
    assertSuccessorOrder(this.self.id, next, this.config.successorsMax);
    const same = next.length === this.successors.length && next.every((n, i) => n.id === this.successors[i]?.id);
    this.successors = next;
    if (!same) {
      this.events.push({ type: 'successors_changed', successors: next.slice() });
      this.fingersChanged();
    }
  }

  /**
   * The finger table or the ring around us changed: fix fingers at the fast period again (at once, not after
   * the idle period), and do not count the current round as one that changed nothing.
   */
  private fingersChanged(): void {
    this.fingerRoundChanged = true;
    if (!this.fingersIdle) return;
    this.fingersIdle = false;
    this.fixFingersAt = Math.min(this.fixFingersAt, this.now + this.config.fixFingersTicks);
  }

  /** The next finger to fix; passing the end of the table ends a round (idle if that round changed nothing). */
  private advanceFingers(next: number): void {
    if (next >= this.fingers.length) {
      this.fingersIdle = !this.fingerRoundChanged;
      this.fingerRoundChanged = false;
      next = 0;
    }
    this.nextFinger = next;
  }

  /** Whether fix_fingers runs at its idle period (a whole round changed nothing); for tests and the simulator. */
  get fingersSettled(): boolean {
    return this.fingersIdle;
  }

  private setPredecessor(p: NodeRef | null): void {
    assert.ok(p === null || p.id !== this.self.id, 'a node is never its own predecessor');
    const previous = this.predecessor;
    if (previous?.id === p?.id) return;
    this.predecessor = p;
    this.events.push({ type: 'predecessor_changed', predecessor: p, previous });
  }

  /**
   * finger[i..] = owner, for every j from i on whose start lies in (self, owner]:
   * all of those have the same successor. Returns the index after the last set.
   * An owner that cannot be finger i (stale or hostile answer) is refused.
   */
  private setFingers(i: number, owner: NodeRef): number {
    if (owner.id === this.self.id) {
      if (this.fingers[i] !== null) this.fingersChanged();
      this.fingers[i] = null;
      return i + 1;
    }
    const d = distance(this.self.id, owner.id);
    if ((pow2[i] as bigint) > d) {
      this.drop('bad_finger');
      return i + 1;
    }
    let j = i;
    for (; j < this.fingers.length && (pow2[j] as bigint) <= d; j++) {
      if (this.fingers[j]?.id !== owner.id) this.fingersChanged();
      this.fingers[j] = owner;
    }
    return j;
  }

  /** Forgets a peer everywhere; emits peer_suspected only if it was known. */
  /**
   * A node joining under an id this table still names: drop every entry for that id. Even the last successor
   * goes (unlike a silent one): that node told us it is in no ring, so it cannot be the link to another one; a
   * node it leaves alone answers its join itself, and the ring forms again from there.
   */
  private forgetJoiner(peer: NodeRef): void {
    this.misses.delete(peer.id);
    const named = this.predecessor?.id === peer.id || this.successors.some((s) => s.id === peer.id) || this.fingers.some((f) => f?.id === peer.id);
    if (named) this.forget(peer, 'left');
  }

  private forget(peer: NodeRef, reason: 'timeout' | 'left'): void {
    let known = false;
    for (let i = 0; i < this.fingers.length; i++) {
      if (this.fingers[i]?.id === peer.id) {
        this.fingers[i] = null;
        known = true;
        this.fingersChanged();
      }
    }
    if (this.predecessor?.id === peer.id) {
      this.setPredecessor(null);
      known = true;
    }
    if (this.successors.some((s) => s.id === peer.id)) {
      known = true;
      const rest = this.successors.filter((s) => s.id !== peer.id);
      // An empty list would cut us off: fall back on the nearest finger we still have,
      // or on the predecessor (in a small ring it is also the next node round).
      const fallback = this.fingers.filter((f): f is NodeRef => f !== null);
      if (this.predecessor) fallback.push(this.predecessor);
      // With nobody else known, a silent last successor is kept (and retried): a node
      // with an empty list believes it is alone and would answer every lookup itself,
      // and nodes joining through it would form a second ring that never merges.
      if (rest.length > 0) this.setSuccessors(rest);
      else if (fallback.length > 0 || reason === 'left') this.setSuccessors(fallback);
    }
    if (known) this.events.push({ type: 'peer_suspected', peer, reason });
  }

  /** One unanswered request; the peer is forgotten after suspectAfterMisses in a row. */
  private miss(peer: NodeRef): void {
    const n = (this.misses.get(peer.id) ?? 0) + 1;
    if (n < this.config.suspectAfterMisses) {
      // Hostile lookups can name many silent peers: keep the table bounded.
      if (this.misses.size >= missesTrackedMax) this.misses.clear();
      this.misses.set(peer.id, n);
      return;
    }
    this.misses.delete(peer.id);
    this.forget(peer, 'timeout');
  }

  /** Programmer-error check of the whole table (tests and the simulator call it). */
  checkInvariants(): void {
    assertSuccessorOrder(this.self.id, this.successors, this.config.successorsMax);
    for (let i = 0; i < this.fingers.length; i++) {
      const f = this.fingers[i];
      if (f === null || f === undefined) continue;
      assert.ok(f.id !== this.self.id, 'a finger never points at self');
      assert.ok(distance(this.self.id, f.id) >= (pow2[i] as bigint), `finger ${i} lies before self + 2^${i}`);
    }
  }

  /**
   * Installs a routing state computed elsewhere (the simulator's bootstrapFromSortedIds,
   * which builds large rings without simulating every join). Checked like any update.
   */
  seedState(s: { predecessor: NodeRef | null; successors: readonly NodeRef[]; fingers: ReadonlyArray<NodeRef | null> }): void {
    assert.equal(s.fingers.length, this.fingers.length, 'finger table size');
    this.status = 'active';
    this.setPredecessor(s.predecessor);
    this.setSuccessors(s.successors);
    for (let i = 0; i < s.fingers.length; i++) this.fingers[i] = s.fingers[i] ?? null;
    this.checkInvariants();
  }

  // ---- inputs: the user's ----

  /** Enters the ring that `bootstrap` belongs to: look up our own id through it. */
  join(bootstrap: NodeRef): void {
    assert.ok(bootstrap.id !== this.self.id, 'cannot join through oneself');
    assert.ok(this.status !== 'left', 'a node that left cannot rejoin; make a new one');
    this.status = 'joining';
    this.setPredecessor(null);
    this.setSuccessors([]);
    this.fingers.fill(null);
    this.fingersChanged();
    this.joinBootstrap = { id: bootstrap.id, addr: bootstrap.addr };
    this.startJoin();
  }

  /**
   * Gives up a join that cannot complete and is a ring of one again (Chord's create()): its bootstrap and every
   * node it could join through instead are down or joining themselves, and a joining node answers no lookup, so
   * without one of them standing alone nobody ever becomes active (enclave/cluster/rejoin.ts decides when). The
   * others then join through it; a second ring this makes is merged like any other (docs/membership.md).
   */
  standAlone(): void {
    if (this.status !== 'joining') return;
    this.status = 'active';
    this.joinBootstrap = null;
    for (const [rid, l] of this.lookups) if (l.purpose.kind === 'join') this.lookups.delete(rid);
    this.setPredecessor(null);
    this.setSuccessors([]);
    this.fingers.fill(null);
    this.fingersChanged();
    this.stabilizeAt = this.now + 1;
  }

  private startJoin(): void {
    const b = this.joinBootstrap;
    assert.ok(b !== null);
    this.joinRetryAt = this.now + this.config.joinRetryTicks + this.config.lookupTimeoutTicks;
    // Look up the first node strictly after us, not successor(self): when an enclave comes back with its
    // sealed identity, the ring may still list its old incarnation at this very id, which would name us.
    const joinKey = (this.self.id + 1n) & idMask;
    const rid = this.newLookup(joinKey, 'recursive', { kind: 'join' });
    if (rid === null) return;
    const msg: FindSuccessor = {
      type: 'find_successor', from: this.self, origin: this.self, rid, hopId: 0, key: joinKey, final: false,
      path: [this.self.id],
    };
    this.forward(b, msg, false);
  }

  /**
   * Graceful leave: hands the neighbours what they need to close the gap. The data
   * layer moves the keys first; after this the node ignores every input.
   */
  leave(): void {
    if (this.status !== 'active') return;
    // One message shape for both neighbours: the successor uses `predecessor`,
    // the predecessor uses `successors` (in a two-node ring they are one node).
    const msg: Leave = { type: 'leave', from: this.self, predecessor: this.predecessor, successors: this.successors.slice() };
    const told = new Set<bigint>();
    for (const n of [this.successors[0], this.predecessor]) {
      if (n && !told.has(n.id)) {
        told.add(n.id);
        this.send(n, msg);
      }
    }
    this.status = 'left';
    this.rpcs.clear();
    this.forwards.clear();
    for (const [rid, l] of this.lookups) this.finishFailed(rid, l, 'not_joined');
    this.events.push({ type: 'left' });
  }

  /** Starts a lookup; its result comes back as a lookup_done / lookup_failed event with this id. */
  lookup(key: bigint, mode: LookupMode = 'recursive'): number {
    if (!isId(key)) throw new RingError('BAD_ID', 'key out of range');
    // self + 1 is the join's key (onFindSuccessor: other nodes drop their entries for a joining origin); its owner
    // is the same as self + 2's unless a node sits exactly at self + 1 (ids are SHA-256 values).
    if (key === ((this.self.id + 1n) & idMask)) key = (this.self.id + 2n) & idMask;
    if (this.status !== 'active') {
      const rid = this.id();
      this.events.push({ type: 'lookup_failed', rid, key, mode, reason: 'not_joined' });
      return rid;
    }
    const rid = this.newLookup(key, mode, { kind: 'user' });
    if (rid === null) {
      const r = this.id();
      this.events.push({ type: 'lookup_failed', rid: r, key, mode, reason: 'busy' });
      return r;
    }
    this.startLookup(rid);
    return rid;
  }

  private newLookup(key: bigint, mode: LookupMode, purpose: Purpose): number | null {
    if (this.lookups.size >= lookupsInflightMax) return null;
    const rid = this.id();
    this.lookups.set(rid, {
      key, mode, purpose, deadline: this.now + this.config.lookupTimeoutTicks, trail: [], exclude: [], path: [this.self.id],
    });
    return rid;
  }

  private startLookup(rid: number): void {
    const l = this.lookups.get(rid);
    assert.ok(l !== undefined);
    if (l.mode === 'recursive') {
      this.onFindSuccessor({
        type: 'find_successor', from: this.self, origin: this.self, rid, hopId: 0, key: l.key, final: false, path: [],
      });
    } else {
      this.iterate(rid, l);
    }
  }

  // ---- inputs: time ----

  tick(): void {
    if (this.status === 'left') return;
    this.now++;
    this.expireRpcs();
    this.expireForwards();
    this.expireLookups();
    if (this.status === 'joining') {
      if (this.now >= this.joinRetryAt && !this.hasJoinLookup()) this.startJoin();
      return;
    }
    if (this.now >= this.stabilizeAt) {
      this.stabilizeAt = this.now + this.config.stabilizeTicks;
      this.stabilize();
    }
    if (this.now >= this.checkPredecessorAt) {
      this.checkPredecessorAt = this.now + this.config.checkPredecessorTicks;
      this.checkPredecessor();
    }
    if (this.now >= this.fixFingersAt) {
      this.fixFingersAt = this.now + (this.fingersIdle ? this.config.fixFingersIdleTicks ?? this.config.fixFingersTicks : this.config.fixFingersTicks);
      this.fixFingers();
    }
  }

  private hasJoinLookup(): boolean {
    for (const l of this.lookups.values()) if (l.purpose.kind === 'join') return true;
    return false;
  }

  private expireRpcs(): void {
    for (const [rid, rpc] of this.rpcs) {
      if (rpc.deadline > this.now) continue;
      this.rpcs.delete(rid);
      this.miss(rpc.peer);
      if (rpc.kind === 'closest_preceding') this.iterativeTimeout(rpc.lookup, rpc.peer);
      if (rpc.kind === 'get_predecessor') this.stabilizeAt = this.now + 1; // retry soon, maybe the next successor
    }
  }

  /** A hop that did not acknowledge is dead: forget it and route the lookup around it. */
  private expireForwards(): void {
    for (const [hopId, f] of this.forwards) {
      if (f.deadline > this.now) continue;
      this.forwards.delete(hopId);
      this.miss(f.to);
      if (this.status !== 'active') continue;
      const m = f.received;
      const r = route(this, m.key, m.final, new Set([f.to.id]));
      if (r.kind === 'forward') this.forward(r.to, m, r.final);
      else if (r.kind === 'owner') this.answer(m);
      else this.drop('no_route');
    }
  }

  private expireLookups(): void {
    for (const [rid, l] of this.lookups) if (l.deadline <= this.now) this.finishFailed(rid, l, 'timeout');
  }

  // ---- maintenance: stabilize, notify, check_predecessor, fix_fingers ----

  private stabilize(): void {
    const succ = this.successors[0];
    if (succ === undefined) {
      // Alone: a node that notified us is our first partner (Chord's two-node case).
      if (this.predecessor) this.setSuccessors([this.predecessor]);
      return;
    }
    for (const rpc of this.rpcs.values()) if (rpc.kind === 'get_predecessor') return;
    const rid = this.id();
    this.rpcs.set(rid, { kind: 'get_predecessor', peer: succ, deadline: this.now + this.config.rpcTimeoutTicks });
    this.send(succ, { type: 'get_predecessor', from: this.self, rid });
  }

  private onPredecessorReply(m: PredecessorReply): void {
    const succ = m.from;
    const list = [succ, ...m.successors];
    const p = m.predecessor;
    // x = successor.predecessor; if x in (n, successor) then successor = x.
    if (p !== null && betweenOpen(p.id, this.self.id, succ.id)) list.unshift(p);
    this.setSuccessors(list);
    const first = this.successors[0];
    if (first) this.send(first, { type: 'notify', from: this.self });
  }

  private onNotify(from: NodeRef): void {
    if (this.isDead(from.id)) return this.drop('unexpected');
    const pred = this.predecessor;
    if (pred === null || betweenOpen(from.id, pred.id, this.self.id)) this.setPredecessor(from);
    if (this.successors.length === 0) this.setSuccessors([from]);
  }

  private checkPredecessor(): void {
    const pred = this.predecessor;
    if (pred === null) return;
    for (const rpc of this.rpcs.values()) if (rpc.kind === 'ping' && rpc.peer.id === pred.id) return;
    const rid = this.id();
    this.rpcs.set(rid, { kind: 'ping', peer: pred, deadline: this.now + this.config.rpcTimeoutTicks });
    this.send(pred, { type: 'ping', from: this.self, rid });
  }

  /**
   * Refreshes finger[next]. When its start lies in (self, successor] no lookup is
   * needed; an answer fills every later finger with the same successor, so a
   * full refresh costs about log2 N lookups rather than 256.
   */
  private fixFingers(): void {
    if (this.fingerLookup) return;
    const i = this.nextFinger;
    const start = fingerStart(this.self.id, i);
    const succ = this.successors[0];
    if (succ === undefined) {
      this.advanceFingers(i + 1);
      return;
    }
    if (betweenRightIncl(start, this.self.id, succ.id)) {
      this.advanceFingers(this.setFingers(i, succ));
      return;
    }
    const rid = this.newLookup(start, 'recursive', { kind: 'finger', index: i });
    if (rid === null) return;
    this.fingerLookup = true;
    this.startLookup(rid);
  }

  // ---- recursive lookups ----

  /** Sends a lookup one hop on and waits for that hop's acknowledgement. */
  private forward(to: NodeRef, received: FindSuccessor, final: boolean): void {
    if (this.forwards.size >= forwardsInflightMax) {
      this.drop('busy');
      return;
    }
    const hopId = this.id();
    const out: FindSuccessor = { ...received, from: this.self, hopId, final };
    this.forwards.set(hopId, { to, received, deadline: this.now + this.config.rpcTimeoutTicks });
    this.send(to, out);
  }

  private onFindSuccessor(m: FindSuccessor): void {
    // Not yet active (e.g. an enclave back under its old id): no ack, so the sender routes around us.
    if (this.status !== 'active') return this.drop('not_active');
    if (m.from.id !== this.self.id) this.send(m.from, { type: 'find_successor_ack', from: this.self, hopId: m.hopId });
    // A join lookup (key origin + 1, which no other lookup uses: see lookup()) says its origin is in no ring: an
    // entry for its id here is its previous run, gone, which would otherwise swallow this very lookup (the closest
    // node before origin + 1 is origin itself, and a joining node answers nothing). Forgotten, not refused: it is
    // about to come back under that id (docs/membership.md, "Restarts").
    if (m.origin.id !== this.self.id && m.key === ((m.origin.id + 1n) & idMask)) this.forgetJoiner(m.origin);
    if (m.path.length > hopsMax) return this.drop('hops_exceeded');
    const msg: FindSuccessor = { ...m, path: [...m.path, this.self.id] };
    const r = route(this, m.key, m.final, null);
    if (r.kind === 'owner') this.answer(msg);
    else if (r.kind === 'forward') this.forward(r.to, msg, r.final);
    else this.drop('no_route');
  }

  /** We own m.key: answer the origin directly. */
  private answer(m: FindSuccessor): void {
    const found: Found = {
      type: 'found', from: this.self, rid: m.rid, key: m.key, path: m.path, predecessor: this.predecessor,
      successors: this.successors.slice(),
    };
    if (m.origin.id === this.self.id) this.onFound(found);
    else this.send(m.origin, found);
  }

  private onFound(m: Found): void {
    const l = this.lookups.get(m.rid);
    if (l === undefined || l.mode !== 'recursive' || l.key !== m.key) return this.drop('unexpected');
    this.finishDone(m.rid, l, m.from, m.predecessor, m.successors, m.path);
  }

  // ---- iterative lookups: the origin walks the hops itself ----

  private iterate(rid: number, l: Lookup): void {
    const last = l.trail[l.trail.length - 1];
    if (last !== undefined) return this.ask(rid, l, last.node, last.final);
    const r = route(this, l.key, false, new Set(l.exclude));
    if (r.kind === 'owner') {
      return this.finishDone(rid, l, this.self, this.predecessor, this.successors.slice(), l.path);
    }
    if (r.kind === 'none') return this.finishFailed(rid, l, 'no_route');
    this.ask(rid, l, r.to, r.final);
  }

  private ask(rid: number, l: Lookup, to: NodeRef, final: boolean): void {
    if (l.path.length > hopsMax) return this.finishFailed(rid, l, 'no_route');
    const q = this.id();
    this.rpcs.set(q, {
      kind: 'closest_preceding', peer: to, deadline: this.now + this.config.rpcTimeoutTicks, lookup: rid, final,
    });
    this.send(to, { type: 'closest_preceding', from: this.self, rid: q, key: l.key, final, exclude: l.exclude.slice() });
  }

  private onClosestPreceding(m: ClosestPreceding): void {
    if (this.status !== 'active') return this.drop('not_active');
    const r = route(this, m.key, m.final, new Set(m.exclude));
    if (r.kind === 'none') return this.drop('no_route');
    this.send(m.from, {
      type: 'closest_preceding_reply', from: this.self, rid: m.rid, key: m.key,
      result: r.kind === 'owner' ? 'owner' : r.final ? 'successor' : 'next',
      next: r.kind === 'owner' ? null : r.to, predecessor: this.predecessor, successors: this.successors.slice(),
    });
  }

  private onClosestPrecedingReply(m: ClosestPrecedingReply, rpc: Rpc): void {
    if (rpc.kind !== 'closest_preceding') return this.drop('unexpected');
    const l = this.lookups.get(rpc.lookup);
    if (l === undefined || l.key !== m.key) return this.drop('unexpected');
    l.path.push(m.from.id);
    if (m.result === 'owner') return this.finishDone(rpc.lookup, l, m.from, m.predecessor, m.successors, l.path);
    const next = m.next as NodeRef;
    l.trail.push({ node: m.from, final: rpc.final });
    if (next.id === this.self.id) {
      // The answer points back at us: decide as that node would have asked us to.
      const r = route(this, l.key, m.result === 'successor', new Set(l.exclude));
      if (r.kind === 'owner') return this.finishDone(rpc.lookup, l, this.self, this.predecessor, this.successors.slice(), l.path);
      if (r.kind === 'none') return this.finishFailed(rpc.lookup, l, 'no_route');
      return this.ask(rpc.lookup, l, r.to, r.final);
    }
    this.ask(rpc.lookup, l, next, m.result === 'successor');
  }

  /** The asked node is dead: exclude it and ask the last node that answered again. */
  private iterativeTimeout(rid: number, dead: NodeRef): void {
    const l = this.lookups.get(rid);
    if (l === undefined) return;
    if (l.exclude.length >= excludeMax) return this.finishFailed(rid, l, 'no_route');
    l.exclude.push(dead.id);
    this.iterate(rid, l);
  }

  // ---- lookup completion ----

  private finishDone(rid: number, l: Lookup, owner: NodeRef, predecessor: NodeRef | null, successors: NodeRef[], path: bigint[]): void {
    this.lookups.delete(rid);
    const p = l.purpose;
    if (p.kind === 'finger') {
      this.fingerLookup = false;
      if (this.status === 'active') this.advanceFingers(this.setFingers(p.index, owner));
    } else if (p.kind === 'join') {
      this.finishJoin(owner, successors);
    } else {
      this.events.push({
        type: 'lookup_done', rid, key: l.key, mode: l.mode, owner, predecessor, successors, hops: path.length - 1,
        path: path.slice(),
      });
    }
  }

  private finishFailed(rid: number, l: Lookup, reason: LookupFailure): void {
    this.lookups.delete(rid);
    if (l.purpose.kind === 'finger') this.fingerLookup = false;
    else if (l.purpose.kind === 'user') this.events.push({ type: 'lookup_failed', rid, key: l.key, mode: l.mode, reason });
  }

  private finishJoin(owner: NodeRef, successors: NodeRef[]): void {
    if (this.status !== 'joining' || owner.id === this.self.id) return this.drop('unexpected');
    this.setSuccessors([owner, ...successors]);
    if (this.successors.length === 0) return;
    this.status = 'active';
    this.joinBootstrap = null;
    this.stabilizeAt = this.now + 1; // tell the successor about us at the next tick
    this.events.push({ type: 'joined', successor: owner });
  }

  // ---- step: every message from a peer ----

  /** Feeds one message from the network. Anything malformed is dropped and counted, never thrown. */
  step(raw: unknown): void {
    let m: RingMessage;
    try {
      m = validateRingMessage(raw);
    } catch (e) {
      if (e instanceof RingError) return this.drop('malformed');
      throw e;
    }
    if (m.from.id === this.self.id) return this.drop('from_self');
    if (this.status === 'left') return this.drop('not_active');
    this.misses.delete(m.from.id); // it spoke, so it is alive
    this.dispatch(m);
  }

  private dispatch(m: RingMessage): void {
    switch (m.type) {
      case 'find_successor': return this.onFindSuccessor(m);
      case 'find_successor_ack': return this.onAck(m.from, m.hopId);
      case 'found': return this.onFound(m);
      case 'closest_preceding': return this.onClosestPreceding(m);
      case 'get_predecessor': return this.onGetPredecessor(m.from, m.rid);
      case 'ping': return this.send(m.from, { type: 'pong', from: this.self, rid: m.rid });
      case 'notify': return this.status === 'active' ? this.onNotify(m.from) : this.drop('not_active');
      case 'leave': return this.onLeave(m);
      case 'closest_preceding_reply':
      case 'predecessor_reply':
      case 'pong': return this.onReply(m);
    }
  }

  private onAck(from: NodeRef, hopId: number): void {
    const f = this.forwards.get(hopId);
    if (f === undefined || f.to.id !== from.id) return this.drop('unexpected');
    this.forwards.delete(hopId);
  }

  private onGetPredecessor(from: NodeRef, rid: number): void {
    if (this.status !== 'active') return this.drop('not_active');
    this.send(from, {
      type: 'predecessor_reply', from: this.self, rid, predecessor: this.predecessor, successors: this.successors.slice(),
    });
  }

  /** A reply counts only if we asked that very peer that very question. */
  private onReply(m: ClosestPrecedingReply | PredecessorReply | { type: 'pong'; from: NodeRef; rid: number }): void {
    const rpc = this.rpcs.get(m.rid);
    if (rpc === undefined || rpc.peer.id !== m.from.id || rpc.kind !== expectedRpc[m.type]) return this.drop('unexpected');
    this.rpcs.delete(m.rid);
    if (m.type === 'predecessor_reply') {
      if (this.status === 'active') this.onPredecessorReply(m);
    } else if (m.type === 'closest_preceding_reply') {
      this.onClosestPrecedingReply(m, rpc);
    }
  }

  private onLeave(m: Leave): void {
    this.remember(m.from.id);
    const wasPred = this.predecessor?.id === m.from.id;
    const wasSucc = this.successors.some((s) => s.id === m.from.id);
    const rest = this.successors.filter((s) => s.id !== m.from.id);
    this.forget(m.from, 'left');
    if (wasPred && m.predecessor !== null && m.predecessor.id !== this.self.id) this.setPredecessor(m.predecessor);
    if (wasSucc) this.setSuccessors([...rest, ...m.successors]);
  }
}

const expectedRpc: Record<'closest_preceding_reply' | 'predecessor_reply' | 'pong', Rpc['kind']> = {
  closest_preceding_reply: 'closest_preceding',
  predecessor_reply: 'get_predecessor',
  pong: 'ping',
};
