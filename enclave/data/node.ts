// DataNode: the data layer of one enclave as a deterministic state machine
// (docs/consistency.md). Inputs: step(inbound), tick(now), leave(). Output:
// ready() = records to make durable, then messages to send after they are.
// No I/O, no clock, no Math.random: time is the caller's monotonic tick count,
// randomness is injected.
//
// Per range: a chain of configurations, each decided by Paxos among the
// members of the previous one; the owner of the newest one serves after it has
// synced every member; writes need every member's durable acknowledgement;
// reads need a read lease granted by every member on its own clock.
import assert from 'node:assert/strict';
import { hash } from 'node:crypto';
import { distance, idSpace, keyId } from '../ring/index.ts';
import { goneMax, witnessesMax } from './codec.ts';
import { type DataConfig, expireBatchDefault, ownerLeaseTicks, ttlTicksStretched, validateDataConfig } from './config.ts';
import {
  applyRecord, cloneSessions, dataOut, emptySessions, entryBytes, type Inflight, mergeInto, newRange, type Pending, type Proposal, type RangeState, type TtlRule,
} from './range.ts';
import {
  type Ballot, type ClientOp, type ClientResult, type Config, cmpBallot, type Entry, expiredHere, type Inbound, type LogRecord, type Member,
  type Outbound, type PeerBody, type Ready, internalPrincipalPrefix, replacedBootsMax, sameMember, sessionCounter, sessionNonceSpan, type Witnessed, type WriteOp, type WriteResult, bootIdMax,
} from './types.ts';

/** Counters of the data core's own work (the driver exports them as metrics: nothing names a key or a principal). */
export interface DataCounters {
  /** Expired values replaced by their tombstone, acknowledged by every member (at the owner). */
  expiredCollected: number;
  /** Replicate, sync, install, prepare and accept messages sent again because no answer came in time. */
  resends: number;
  /** FENCED answers received for this node's writes or syncs (its epoch was over). */
  fenced: number;
}

export function newDataCounters(): DataCounters {
  return { expiredCollected: 0, resends: 0, fenced: 0 };
}

export interface DataNodeInit {
  self: Member;
  config: DataConfig;
  /** Uniform in [0, 1): spreads retries so that proposers do not duel in lockstep. */
  rand: () => number;
  /** Addresses of the nodes this one may talk to (the driver's directory; never trusted for safety). */
  peers: ReadonlyArray<{ name: string; ring: bigint }>;
  /** The durable log to replay (empty for a node without state). */
  log: readonly LogRecord[];
  /** Configurations a founding node starts from when it has no log (the ring's creation). */
  genesis?: readonly Config[];
  /**
   * Test seam only (image-config's host-may-found / any-pull-source controls): take every range alone, at an
   * epoch above the log's, whatever the log holds: what a host that could say "you are alone" would get.
   */
  seizeAll?: boolean;
  now: number;
  /**
   * This start's boot id (docs/consistency.md, "Boots and clones"): a random integer in [1, 2^48], drawn from the
   * enclave's own randomness, never the host's. Default: drawn from `rand`.
   */
  boot?: number;
  /** Counters to add to (the driver passes the same object to every core it builds, so totals survive a rebuild). */
  counters?: DataCounters;
  /** Optional debug log of ownership changes (the simulator's --trace). */
  debug?: (line: string) => void;
  /**
   * Name the keys of a range in the debug log (the simulator's --trace only). Review-15 F2: an enclave's logs go to
   * its host, which also picks the log level, so the enclave's debug lines give counts, never keys.
   */
  debugKeys?: boolean;
}

interface PeerView { ring: bigint; inc: number; heard: number; leaving: boolean }

const sessionKey = ''; // keys are at least one byte, so '' serializes session opens
/** Opens waiting at a range's owner (they run one at a time), in all and per principal; beyond, UNAVAILABLE. */
export const opensQueuedMax = 64;
export const opensQueuedPerPrincipal = 4;
/**
 * One principal's requests waiting at a range's owner (opens and writes, by principal tag) are bounded to
 * `queuedMax / queuedPrincipalShare` (512 of 4,096), so that no one caller can take the range's queue from
 * the others (review-3 R10: 32 sessions x 64 window on one key was 2,048). Beyond, the request is answered
 * BUSY before it is queued: not applied by this attempt, and retried like UNAVAILABLE (its request id makes a
 * retry apply once). Callers without a key share the `anon` tag, so together they hold at most one share;
 * the enclave's own principals (access documents) are not bounded here, only by `queuedMax`. Principals that
 * already have requests waiting fill the range's queue up to `queuedMax`; one more share is kept for principals
 * with none waiting (review-5 R1), so a range holds at most `queuedMax` plus one share.
 */
export const queuedPrincipalShare = 8;

/** The most requests one principal may have waiting in one range (at least 1). */
export function queuedPerPrincipalMax(cfg: Pick<DataConfig, 'queuedMax'>): number {
  return Math.max(1, Math.floor(cfg.queuedMax / queuedPrincipalShare));
}
/**
 * Callers waiting for one write in flight (its retries, by any number of entry nodes); past this the oldest is
 * answered UNAVAILABLE (its entry node has usually given up on it already). Without the bound, a write the host
 * keeps from completing (it holds one member's acknowledgements) plus a client re-sending it grew without end.
 */
export const waitersPerWriteMax = 32;
/**
 * Gets waiting for a write in flight on a value past its deadline (its expiry, or the write before it); past
 * this the oldest is answered UNAVAILABLE (the client retries), so a held-up expiry cannot gather reads without end.
 */
export const getsPerWriteMax = 256;

/** Recent keys' ranges (a request asks for its key's range several times on its way: SHA-256 and BigInt each time). */
const shardMemo = new Map<number, Map<string, number>>();
const shardMemoMax = 4096;

export function shardOf(key: string, shards: number): number {
  let memo = shardMemo.get(shards);
  if (memo === undefined) shardMemo.set(shards, (memo = new Map()));
  const known = memo.get(key);
  if (known !== undefined) return known;
  const shard = Number((keyId(Buffer.from(key, 'latin1')) * BigInt(shards)) / idSpace);
  if (memo.size >= shardMemoMax) memo.clear();
  if (key.length <= 1024) memo.set(key, shard);
  return shard;
}

export function shardStart(shard: number, shards: number): bigint {
  return (BigInt(shard) * idSpace) / BigInt(shards);
}

function majority(n: number): number {
  return Math.floor(n / 2) + 1;
}

/** Messages whose sender's log position a witness keeps durably (votes and acknowledgements others rely on). */
const voteTypes: ReadonlySet<PeerBody['t']> = new Set(['promise', 'accepted', 'installAck', 'syncAck', 'replicateAck', 'leaseGrant']);

/** Messages that only the boot they were meant for may count (a vote, an acknowledgement, a grant, a boot lease). */
const boundTypes: ReadonlySet<PeerBody['t']> = new Set([...voteTypes, 'bootA']);

/** What a member does that others rely on: held back while checking, fenced, or without a boot lease. */
const actTypes: ReadonlySet<PeerBody['t']> = new Set(['prepare', 'accept', 'install', 'sync', 'replicate', 'leaseReq']);

/**
 * Per peer name: the highest (incarnation, position) seen on its messages, the one boot of that incarnation this
 * node admits (0: none yet), when that boot was last heard (memory only) and the boot it replaced (memory only).
 */
/**
 * `retired`: that incarnation retired for good (B7), learnt at `retiredAt` (this run's clock; a log's: its start);
 * `handed`: heard from the retiring boot itself, whose witnesses were merged into this node's (review-7 F1);
 * `mine` (only when handed): what that retiring boot had witnessed of this node itself (B7c', seed 130678).
 */
interface Witness { inc: number; pos: number; boot: number; posBoot: number; heard: number; replaced: number[]; retired: boolean; retiredAt: number; handed: boolean; mine: SelfWitness | null }

/** A retired member's witness of this node (incarnation, position, boot of that position), kept by B7c'. */
interface SelfWitness { inc: number; pos: number; posBoot: number }

/** `held`: `name/inc` of the retired members whose witnesses the answerer holds (review-7 F1). */
function witnessed(name: string, x: Witness): Witnessed {
  const base = [name, x.pos, x.inc, x.boot, x.posBoot, x.replaced] as const;
  if (!x.retired) return base;
  if (!x.handed) return [...base, 1];
  return x.mine ? [...base, 2, [x.mine.inc, x.mine.pos, x.mine.posBoot]] : [...base, 2];
}

interface WitAnswer { inc: number; pos: number; boot: number; posBoot: number; live: boolean; held: ReadonlySet<string> }

/** Boots a node's log remembers (start marks; snapshots repeat them): a witness naming an older one is a fork. */
export const bootHistoryMax = 64;
/** A new incarnation is the highest known plus 1 plus a random step below this, so two boots never pick the same. */
export const incStepMax = 2 ** 20;

/** Other members of an n-member configuration whose boot lease a member needs to act: ⌈(n−1)/2⌉. */
export function leaseQuorum(n: number): number {
  return Math.ceil((n - 1) / 2);
}

/**
 * Other members of an n-member configuration that must admit a restarted boot before it keeps its incarnation:
 * ⌊(n−1)/2⌋ + 1, so that with leaseQuorum(n) the two sets of the n−1 others always intersect (every other
 * member with R = 3; three of four with R = 5).
 */
export function admitQuorum(n: number): number {
  return n <= 1 ? 0 : Math.floor((n - 1) / 2) + 1;
}

export class DataNode {
  private me: Member;
  readonly cfg: Readonly<DataConfig>;
  private readonly rand: () => number;
  private readonly debug: ((line: string) => void) | undefined;
  private readonly debugKeys: boolean;
  private readonly ranges: RangeState[];
  private readonly peers = new Map<string, PeerView>();
  private now: number;
  private readonly startedAt: number;
  private leaving = false;
  /** B7: this incarnation retired (it acts in nothing and only tells its peers, until it is stopped). */
  private retired = false;
  /**
   * review-8 F4: this boot is a copy of a retired incarnation from before its record (told so while checking): it
   * stays retired, silent (its witnesses are older than the ones the retiring boot handed over), and never takes a
   * new incarnation (whose witness entry would replace the retired one at the peers: the retirement taken back).
   */
  private retiredCopy = false;
  /** Peers whose heartbeat said they know of this node's retirement (durably: persist-then-send), B7a. */
  private readonly retireEchoes = new Set<string>();
  /** The incarnation a replayed `ret` record names (B7a), if it is the log's own. */
  private retiredInc = -1;
  private heartbeatAt = 0;
  /** Heartbeats sent: every heartbeatFullEvery-th carries every configuration to every peer. */
  private heartbeats = 0;
  /**
   * Per peer name: the epochs it reported on its last heartbeat, when (own clock), and from which incarnation and
   * boot (a message from another one drops the report: that peer's state may be older than it said).
   */
  private readonly reports = new Map<string, { epochs: readonly number[]; at: number; inc: number; boot: number | undefined }>();
  private nextOpId = 1;
  /** Expired keys this node may still start collecting in the current tick. */
  private expireBudget = 0;
  readonly counters: DataCounters;
  private readonly ttlRule: TtlRule;
  private persist: LogRecord[] = [];
  private out: Outbound[] = [];
  private readonly selfQueue: Inbound[] = [];
  private desiredSig = '';
  private readonly desiredCache = new Map<number, Member[]>();
  /** Records made (replayed or live): this node's sealed-log position, carried on every message it sends. */
  private pos = 0;
  /** The position its log gave it at start: what peers' witnesses are compared with. */
  private readonly loadedPos: number;
  /** Per peer name: the highest (incarnation, position) seen on its messages. */
  private readonly witness = new Map<string, Witness>();
  /** This start's boot id: sent with every peer message; peers admit one boot per member. */
  readonly boot: number;
  /** Per peer name: until when (own clock) that peer, in that incarnation, confirmed it admits this boot (the boot lease). */
  private readonly bootLease = new Map<string, { until: number; inc: number }>();
  /** A peer said another boot of this member replaced this one: it never votes, acknowledges or serves again. */
  private supersededBy: string | null = null;
  /** The boots whose records this node's log holds, oldest first: each from its start mark's position. */
  private bootHistory: Array<{ boot: number; start: number }> = [];
  /** Per boot in the loaded log: the last position its records reach in this log (the next boot's start). */
  private readonly loadedBoots = new Map<number, number>();
  private readonly witDirty = new Set<string>();
  /**
   * Set while a restarted node checks that it was not rolled back (docs/consistency.md, "Rollback"): it asks
   * every peer what it witnessed of it, and neither votes, acknowledges nor serves until the check is done.
   */
  private checking: { nonce: number; answers: Map<string, WitAnswer>; sentAt: number; rolledBack: boolean } | null = null;
  /** The member this checking boot last found it still needs an admission from (for the debug log). */
  private waitingFor: string | null = null;

  /** The log position its log gave it at start (everything up to it is durable). */
  get loadedPosition(): number {
    return this.loadedPos;
  }

  /** This node as a member: its incarnation grows when it finds it was rolled back. */
  get self(): Member {
    return this.me;
  }

  constructor(init: DataNodeInit) {
    this.me = init.self;
    this.counters = init.counters ?? newDataCounters();
    this.cfg = validateDataConfig(init.config);
    this.ttlRule = { driftPpm: this.cfg.driftPpm, absolute: !!this.cfg.broken?.absoluteDeadlines };
    this.rand = init.rand;
    this.debug = init.debug;
    this.debugKeys = init.debugKeys === true;
    this.now = init.now;
    this.startedAt = init.now;
    this.boot = init.boot ?? 1 + Math.floor(init.rand() * bootIdMax);
    assert.ok(Number.isSafeInteger(this.boot) && this.boot >= 1 && this.boot <= bootIdMax, 'boot id out of range');
    this.ranges = Array.from({ length: this.cfg.shards }, (_, s) => newRange(s));
    for (const p of init.peers) {
      if (p.name !== this.self.name) this.peers.set(p.name, { ring: p.ring, inc: -1, heard: -Infinity, leaving: false });
    }
    for (const rec of init.log) this.replay(rec);
    this.loadedPos = this.pos;
    this.bootHistory.forEach((h, i) => this.loadedBoots.set(h.boot, this.bootHistory[i + 1]?.start ?? this.loadedPos));
    // B7a: this log's incarnation retired for good; it is never that member again, nor a new one (a new
    // incarnation's witness entry would replace the retired one at its peers, and with it what they know). It stays
    // retired, acting in nothing and saying so (a crash right after the record may have kept it from its peers),
    // until it is stopped; the node's host does not start it again (a decommission marker, docs/deploy.md).
    const retiredLog = this.retiredInc === this.me.inc && init.log.length > 0;
    if (retiredLog) {
      this.retired = true;
      this.leaving = true;
      this.debug?.(`${this.me.name}/${this.me.inc} RETIRED in its log: says so, acts in nothing`);
    }
    // This boot starts here: durable before anything it sends (its first batch), so any boot a peer ever admitted
    // has its start in its own log, and a log without it is not that boot's continuation.
    this.record({ t: 'mark', shard: 0, pos: this.pos, inc: this.me.inc, boot: this.boot });
    if (init.log.length === 0 && init.genesis) for (const c of init.genesis) this.record({ t: 'cfg', shard: c.shard, config: c });
    // A founder creating the ring has nothing anyone could have witnessed; every other node checks.
    else if (!this.cfg.broken?.noWitnessCheck && !retiredLog) this.checking = { nonce: Math.floor(this.rand() * 2 ** 48), answers: new Map(), sentAt: -Infinity, rolledBack: false };
    if (init.seizeAll) {
      for (const r of this.ranges) this.record({ t: 'cfg', shard: r.shard, config: { shard: r.shard, epoch: (r.config?.epoch ?? 0) + 1, members: [this.self] } });
    }
  }

  private replay(rec: LogRecord): void {
    this.pos++;
    if (rec.t === 'mark') {
      // A higher incarnation's mark: everything before it was the old incarnation's state.
      if (rec.inc > this.me.inc) {
        for (let s = 0; s < this.ranges.length; s++) this.ranges[s] = newRange(s);
        this.me = { ...this.me, inc: rec.inc };
        this.bootHistory = []; // the old incarnation's boots
      }
      // A boot's start mark names where that boot started; a plain mark sets the position (a snapshot's last record).
      if (rec.boot !== undefined) {
        if (rec.inc === this.me.inc) this.noteBoot(rec.boot, rec.pos);
      } else this.pos = Math.max(this.pos, rec.pos);
    } else if (rec.t === 'wit') {
      for (const [name, pos, inc, boot, posBoot, replaced, retired, mine] of rec.w) {
        this.see(name, inc, pos, posBoot);
        const w = this.witness.get(name);
        if (w && w.inc === inc) {
          if (boot !== 0) w.boot = boot;
          w.replaced = [...replaced];
          if (retired !== undefined && !w.retired) {
            w.retired = true;
            w.retiredAt = this.now; // learnt before this boot: counted from its start (B7c)
          }
          if (retired === 2) w.handed = true;
          if (retired === 2 && mine !== undefined) w.mine = this.copyAsLogged({ inc: mine[0], pos: mine[1], posBoot: mine[2] });
        }
      }
    } else if (rec.t === 'ret') {
      if (rec.inc === this.me.inc) this.retiredInc = rec.inc;
    } else {
      applyRecord(this.rangeAt(rec.shard), rec, this.now, this.ttlRule);
    }
  }

  /** Raises the witness of `name`; true if it grew. */
  private see(name: string, inc: number, pos: number, boot: number): boolean {
    const w = this.witness.get(name);
    if (w && (inc < w.inc || (inc === w.inc && pos <= w.pos))) return false;
    if (w && w.inc === inc) {
      w.pos = pos;
      w.posBoot = boot;
    } else this.witness.set(name, { inc, pos, boot: 0, posBoot: boot, heard: -Infinity, replaced: [], retired: false, retiredAt: Infinity, handed: false, mine: null });
    return true;
  }

  private noteBoot(boot: number, start: number): void {
    this.bootHistory = this.bootHistory.filter((h) => h.boot !== boot);
    this.bootHistory.push({ boot, start });
    if (this.bootHistory.length > bootHistoryMax) this.bootHistory.shift();
  }

  // ---- boots (docs/consistency.md, "Boots and clones") ----

  /**
   * Admission: whether a peer message from `m.boot` may be handled. One boot per member name and incarnation is
   * admitted (durably, in the witness record); another boot of the same incarnation replaces it only once the
   * admitted one has been silent here for a whole lease (and this node has run that long), so never while it
   * holds a boot lease from this node. A replaced boot is remembered (durably) and never admitted again: its
   * state lacks what the boot that replaced it did. Any other boot's messages are dropped; a replaced boot is
   * told so.
   */
  private admit(m: Extract<Inbound, { kind: 'peer' }>): boolean {
    if (this.cfg.broken?.noBootFence || m.boot === undefined || m.from.name === this.me.name) return true;
    const name = m.from.name;
    const boot = m.boot;
    const w = this.witness.get(name);
    if (w && m.from.inc < w.inc) return true; // an older incarnation: configurations tell the members apart
    if (w && w.inc === m.from.inc && w.retired && !(m.body.t === 'hb' && m.body.ret)) {
      // review-7 F2: a retired incarnation acts in nothing, whichever boot speaks for it (a copy of its log from
      // before its record, admitted here first or replacing the retired boot, would be the member again). Only its
      // retiring heartbeat is taken (it hands over its witnesses); an asker is told it retired (it is behind).
      if (m.body.t === 'witQ') this.send(name, { t: 'hb', leaving: false, configs: [], gone: [[name, w.inc]] }, boot);
      return false;
    }
    if (!w || m.from.inc > w.inc) {
      this.witness.set(name, { inc: m.from.inc, pos: 0, boot, posBoot: 0, heard: this.now, replaced: [], retired: false, retiredAt: Infinity, handed: false, mine: null });
      this.witDirty.add(name);
      return true;
    }
    if (w.boot === boot || w.boot === 0) {
      if (w.boot === 0) this.witDirty.add(name);
      w.boot = boot;
      w.heard = this.now;
      return true;
    }
    const replaced = w.replaced.includes(boot);
    if (!replaced && this.now - w.heard >= this.cfg.leaseTicks && this.now - this.startedAt >= this.cfg.leaseTicks) {
      this.debug?.(`${this.me.name} admits boot ${boot} of ${name}/${w.inc} (replacing ${w.boot}, silent ${this.now - w.heard})`);
      w.replaced = [...w.replaced, w.boot].slice(-replacedBootsMax);
      w.boot = boot;
      w.heard = this.now;
      this.witDirty.add(name);
      return true;
    }
    // Another boot of an admitted incarnation: a clone, or a restart too early. Its messages are not handled. The
    // asker learns whether the admitted boot is live here (heard within a lease by this run of this node), or only
    // not yet replaceable (this node started less than a lease ago).
    const live = this.now - w.heard < this.cfg.leaseTicks;
    if (m.body.t === 'witQ') this.send(name, this.witAnswer(m.body.nonce, w, live), boot);
    else if (replaced && m.body.t !== 'superseded') this.send(name, { t: 'superseded', boot }, boot);
    return false;
  }

  /**
   * This boot holds boot leases from leaseQuorum(n) other members of `members` (one of two others with R = 3): it
   * may act as a member. With admitQuorum(n) others needed to admit a replacement, the two always share one.
   */
  private bootLeased(members: readonly Member[] | undefined): boolean {
    if (this.cfg.broken?.noBootFence || !members) return true;
    let leased = 0;
    for (const m of members) {
      if (m.name === this.me.name) continue;
      const l = this.bootLease.get(m.name);
      // review-7 F4: a lease from a member known retired does not count (it grants nothing after its record: a grant
      // still arriving is from before it, or from a copy of it that was not the one that retired).
      if (l && l.inc === m.inc && l.until > this.now && !this.retiredMember(m.name, m.inc)) leased++;
    }
    return leased >= leaseQuorum(members.length);
  }

  /** Replaced by another boot: never vote, acknowledge, grant or serve again (the process must be restarted). */
  private fence(by: string): void {
    if (this.supersededBy !== null) return;
    this.supersededBy = by;
    this.debug?.(`${this.me.name}/${this.me.inc} boot ${this.boot} SUPERSEDED (told by ${by})`);
    for (const r of this.ranges) {
      if (r.active || r.activating) this.deactivate(r);
      r.proposal = null;
    }
  }

  /** This node's sealed-log position (records made so far). */
  get position(): number {
    return this.pos;
  }

  /** Whether another boot of this member replaced this one (it is fenced for good). */
  get superseded(): boolean {
    return this.supersededBy !== null;
  }

  /** Whether this node is still checking its state against its peers' witnesses (it votes, acks and serves nothing). */
  get checkingState(): boolean {
    return this.checking !== null;
  }

  // ---- inputs ----

  tick(now: number): void {
    assert.ok(now >= this.now, 'time went backwards');
    this.now = now;
    this.expireBudget = this.cfg.expireBatchMax ?? expireBatchDefault;
    if (now >= this.heartbeatAt) this.heartbeat();
    if (this.retired) return; // B7a: it only tells its peers, until it is stopped
    this.tickCheck();
    // Leases renew together: when one range's renewal is due, every active range past half its renewal interval
    // renews in the same tick, so an owner's requests to a member (and the grants, and the owner's witness record
    // of them) travel as one batch per renewal round instead of one per range (docs/consistency.md "Reads").
    this.renewTogether = false;
    for (const r of this.ranges) if (r.active && now - r.lease.t0 >= this.cfg.renewTicks) this.renewTogether = true;
    for (const r of this.ranges) this.tickRange(r);
    this.drainSelf();
  }

  /** Set for one tick: some range's lease renewal is due, and the others past half their interval join it. */
  private renewTogether = false;

  /**
   * `now` is the same clock as tick's: a message is handled at the time it is handled, never at the last tick's
   * (a process paused with messages queued must not answer them from before the pause: its lease has run out).
   */
  step(m: Inbound, now: number): void {
    assert.ok(now >= this.now, 'time went backwards');
    this.now = now;
    if (m.kind === 'client') this.onClient(m.client, m.rid, m.op);
    else if (this.retired) {
      // B7a: no vote, acknowledgement, grant, boot lease or answer any more; only the peers' echoes are noted.
      // review-8 F1: only from a boot that has passed its own state check (pos -1: still checking, perhaps a clone
      // beside the member that is never admitted, whose log then is not the member's), and per incarnation.
      if (m.body.t === 'hb' && m.pos !== undefined && m.pos >= 0 && m.body.gone?.some(([n, i]) => n === this.me.name && i === this.me.inc)) {
        this.retireEchoes.add(`${m.from.name}/${m.from.inc}`);
      }
      return;
    }
    else {
      // A vote, grant or boot lease meant for another boot of this name (a clone, or the boot this one replaced).
      if (!this.cfg.broken?.noBootFence && m.toBoot && m.toBoot !== this.boot && (m.toInc ?? this.me.inc) === this.me.inc && boundTypes.has(m.body.t)) return;
      // A report describes one boot of one incarnation: anything from another makes it unknown again.
      const rep = this.reports.get(m.from.name);
      if (rep && (rep.inc !== m.from.inc || rep.boot !== m.boot)) this.reports.delete(m.from.name);
      if (!this.admit(m)) return;
      if (m.body.t === 'hb' && m.body.epochs && m.from.name !== this.me.name) {
        this.reports.set(m.from.name, { epochs: m.body.epochs, at: this.now, inc: m.from.inc, boot: m.boot });
      }
      if (m.body.t === 'bootQ') {
        if (m.boot !== undefined) this.send(m.from.name, { t: 'bootA', t0: m.body.t0, boot: m.boot }, m.boot);
        return;
      }
      if (m.pos !== undefined && m.pos >= 0 && m.from.name !== this.me.name && this.see(m.from.name, m.from.inc, m.pos, m.boot ?? 0) && voteTypes.has(m.body.t)) {
        this.witDirty.add(m.from.name);
      }
      this.onPeer(m.from, m.body);
    }
    this.drainSelf();
  }

  /** Graceful leave: stop owning, let every range move away; the driver stops the node later. */
  leave(): void {
    this.leaving = true;
    for (const r of this.ranges) if (r.active || r.activating) this.deactivate(r);
    this.heartbeat();
  }

  /**
   * Retire this incarnation for good (docs/consistency.md, "Retirement", B7): stop acting at once, make the `ret`
   * record durable, then tell every peer (persist-then-send: the heartbeat's position is past the record). The
   * co-members of the ranges that still name this node stop waiting for it when they restart (B7c). Refused
   * (false, nothing done) while a configuration naming this node has fewer than three members: the others
   * would be no majority, and its data would be lost with it (B7d). A node that retired cannot be brought back as
   * this member: a core started from its log takes a new incarnation.
   */
  retire(): boolean {
    if (this.retired) return true;
    // review-7 F6: only a boot that is the member may retire it. One still checking its state may be a rolled-back
    // copy (its witnesses, handed over, would lack what the member witnessed later: F1 again); a superseded one has a
    // replacement that carries the incarnation on.
    if (this.checking || this.supersededBy !== null) return false;
    // review-7 F3: the members left must be a majority, counting those known retired as gone (a second retirement
    // from a range of three would leave one member, which never again makes a majority of it).
    for (const r of this.ranges) {
      const c = r.config;
      if (!c || !this.isMember(c)) continue;
      const left = c.members.filter((m) => !sameMember(m, this.self) && !this.retiredMember(m.name, m.inc)).length;
      if (c.members.length < 3 || left < majority(c.members.length)) return false;
    }
    this.leaving = true;
    this.retired = true;
    this.debug?.(`${this.me.name}/${this.me.inc} boot ${this.boot} RETIRES`);
    for (const r of this.ranges) {
      if (r.active || r.activating) this.deactivate(r);
      r.proposal = null;
    }
    this.checking = null;
    this.record({ t: 'ret', shard: 0, inc: this.me.inc });
    this.heartbeat();
    return true;
  }

  /** Whether this node retired (B7): it acts in nothing; its driver stops it once its peers were told. */
  get hasRetired(): boolean {
    return this.retired;
  }

  /**
   * B7a: whether this node's retirement is known, durably, beyond itself: for every range whose configuration
   * (as this node last knew it) names it, another member of it has echoed the retirement. Then any node that
   * later needs this node's admission learns it from them (B7b), so the driver may stop this node for good.
   * Stopped earlier (a decommission's bounded wait, its host), a retirement nobody heard is a crash-stop.
   */
  get retirementHeard(): boolean {
    if (!this.retired) return false;
    for (const r of this.ranges) {
      const c = r.config;
      if (!c || !this.isMember(c)) continue;
      if (!c.members.some((m) => m.name !== this.me.name && this.retireEchoes.has(`${m.name}/${m.inc}`))) return false;
    }
    return true;
  }

  /** B7c: `m` retired, and this node has known it for a whole lease (every boot lease it granted has run out). */
  private retiredFor(m: Member): boolean {
    if (this.cfg.broken?.retiredNotCounted) return false;
    const w = this.witness.get(m.name);
    return !!w && w.inc === m.inc && w.retired && this.now - w.retiredAt >= this.cfg.leaseTicks;
  }

  /** review-7 F1: some peer's answer to this check holds the retired member's witnesses (merged into its own). */
  private heldByAnswer(answers: ReadonlyMap<string, WitAnswer>, m: Member): boolean {
    const key = `${m.name}/${m.inc}`;
    for (const a of answers.values()) if (a.held.has(key)) return true;
    return false;
  }

  /**
   * Review-18 F5: a B7c' copy, replayed at its record's position. If this log, up to that record, holds what the copy
   * says (its boot's records reach its position), every log that holds the record holds that prefix too: the copy
   * is kept as a plain position (boot 0), which no later log is behind. Kept with its boot, a copy outlived that
   * boot's entry in the boot history (bootHistoryMax boots later) and then read as a fork's position: the restart
   * took a new incarnation (and two such members of one range at once, the range). A copy this log did not hold
   * when it was written is kept as it came, and checked as before (tickCheck).
   */
  private copyAsLogged(m: SelfWitness): SelfWitness {
    if (m.inc !== this.me.inc || m.posBoot === 0) return m;
    const i = this.bootHistory.findIndex((h) => h.boot === m.posBoot);
    if (i < 0) return m;
    const end = this.bootHistory[i + 1]?.start ?? this.pos;
    return m.pos <= end ? { inc: m.inc, pos: m.pos, posBoot: 0 } : m;
  }

  /**
   * B7c' (seed 130678): this node's own log holds the retired member's witnesses (heard from the retiring boot
   * itself), with what it witnessed of this node; that entry, checked as a witness answer (B6), is not behind.
   * (Behind: the check finds it in tickCheck and this boot takes a new incarnation.)
   */
  private heldBySelf(m: Member): boolean {
    if (this.cfg.broken?.retiredSelfNotCounted) return false;
    const w = this.witness.get(m.name);
    return !!w && w.inc === m.inc && w.retired && w.handed && !!w.mine && !this.behind(w.mine);
  }

  /**
   * Retired members that this node's configurations still name (at most ranges x R, capped at goneMax): passed on
   * in heartbeats (B7b), or (`handed`) those whose witnesses this node holds, in its witness answers (review-7 F1).
   */
  private retiredNamed(handed: boolean): Array<readonly [string, number]> {
    const out: Array<readonly [string, number]> = [];
    const seen = new Set<string>();
    for (const r of this.ranges) {
      for (const m of r.config?.members ?? []) {
        const key = `${m.name}/${m.inc}`;
        if (m.name === this.me.name || seen.has(key) || out.length >= goneMax) continue;
        seen.add(key);
        const w = this.witness.get(m.name);
        if (w && w.inc === m.inc && w.retired && (!handed || w.handed)) out.push([m.name, m.inc]);
      }
    }
    return out;
  }

  /** Whether `name` at incarnation `inc` is known to have retired for good (B7b). */
  retiredMember(name: string, inc: number): boolean {
    const w = this.witness.get(name);
    return !!w && w.inc === inc && w.retired;
  }

  /**
   * B7b: `name`/`inc` retired (said by itself, or passed on by a peer). Remembered durably with the witnesses.
   * About this node's own incarnation, from elsewhere: another boot of it was admitted and retired, so this state
   * is a copy from before that (checking: behind; running: fenced).
   */
  private noteRetired(name: string, inc: number, handed?: ReadonlyArray<readonly [string, number, number, number]>): void {
    if (name === this.me.name) {
      if (inc < this.me.inc || this.retired) return;
      if (this.checking) {
        this.checking = null;
        this.retired = true;
        this.leaving = true;
        this.retiredCopy = true;
        this.debug?.(`${this.me.name}/${this.me.inc} boot ${this.boot} is a copy of a retired incarnation (${inc}): stays retired, silent`);
      } else this.fence('retired elsewhere');
      return;
    }
    let w = this.witness.get(name);
    if (w && inc < w.inc) return;
    let mine: SelfWitness | null = null;
    if (handed && !(w?.inc === inc && w.handed)) {
      // review-7 F1: from the retiring boot itself: its witnesses become ours (durably, in this batch's witness
      // record), so that a co-member that counts it as admitting (B7c) is still checked against them (B6).
      for (const [n, i, pos, posBoot] of handed) if (n !== this.me.name && n !== name && this.see(n, i, pos, posBoot)) this.witDirty.add(n);
      // B7c' (seed 130678): and what it witnessed of this node, kept with them, so that this node's own restart can
      // count it as admitting without a peer's answer (it may be the only holder), checked as an answer would be.
      const own = handed.find(([n]) => n === this.me.name);
      // No entry: it witnessed nothing of this node (its answer would be 0) -- unless the list was cut at
      // witnessesMax (review-18 F4), when the missing entry proves nothing: no copy then (wait for a peer's answer).
      mine = own ? { inc: own[1], pos: own[2], posBoot: own[3] } : handed.length < witnessesMax ? { inc: 0, pos: 0, posBoot: 0 } : null;
    }
    if (!w || inc > w.inc) {
      w = { inc, pos: 0, boot: 0, posBoot: 0, heard: -Infinity, replaced: [], retired: true, retiredAt: this.now, handed: false, mine: null };
      this.witness.set(name, w);
    } else if (!w.retired) {
      w.retired = true;
      w.retiredAt = this.now;
    } else if (!handed || w.handed) return;
    if (handed) {
      w.handed = true;
      w.mine = mine;
    }
    this.debug?.(`${this.me.name} learns ${name}/${inc} retired`);
    this.desiredSig = ''; // placement changes: a retired member is never placed (B7c)
    this.witDirty.add(name);
  }

  ready(): Ready {
    const rd = { persist: this.persist, messages: this.out, pos: this.pos };
    this.persist = [];
    this.out = [];
    return rd;
  }

  // ---- introspection for tests and the simulator ----

  configOf(shard: number): Config | null {
    return this.rangeAt(shard).config;
  }

  /** One line about a range, for the simulator's reports. */
  describeRange(shard: number): string {
    const r = this.rangeAt(shard);
    const c = r.config;
    const m = c ? c.members.map((x) => `${x.name}/${x.inc}`).join(',') : '-';
    const p = r.proposal ? `proposing ${r.proposal.phase} b${r.proposal.ballot.round}` : '';
    return `${this.self.name}/${this.self.inc} e${c?.epoch ?? '-'} [${m}] synced=${r.synced} promised=${r.promised?.round ?? '-'} active=${r.active} activating=${!!r.activating} ${p} round=${r.round} leaseUntil=${r.leaseUntil - this.now} lease=${r.lease.validUntil - this.now},${r.lease.t0 - this.now},${[...r.lease.grants].join("+")} inflight=${r.inflight.size} queued=${r.queued}`;
  }

  isActiveOwner(shard: number): boolean {
    return this.rangeAt(shard).active;
  }

  /**
   * The active owner of `shard` with a read lease valid at `now` (the caller's clock reading at the moment of
   * use, never older than the core's last input): what serving a read, or acting on the range's documents,
   * needs. An owner cut off from its members stays `active` until it hears of a newer epoch, but its lease
   * runs out on its own clock (I3, I6).
   */
  isLeasedOwner(shard: number, now: number): boolean {
    const r = this.rangeAt(shard);
    return r.active && Math.max(now, this.now) < r.lease.validUntil;
  }

  /** The entry a leased owner would serve for `key` at `now` (acknowledged state only), or undefined. Null if not the leased owner. */
  ownedEntry(key: string, now: number): Entry | undefined | null {
    const shard = shardOf(key, this.cfg.shards);
    const r = this.rangeAt(shard);
    if (!this.isLeasedOwner(shard, now)) return null;
    const f = r.inflight.get(key);
    return f ? f.prev : r.data.get(key);
  }

  /**
   * Scan hook (enclave/data/scan.ts): the range's acknowledged view for its leased owner at `now` (the same
   * condition as a read), or null. The caller uses it synchronously, at that moment, and keeps nothing of it.
   */
  scanView(shard: number, now: number): import('./scan.ts').ScanView | null {
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.cfg.shards) return null;
    const r = this.rangeAt(shard);
    return (this.cfg.broken?.scanNoLease ? r.active : this.isLeasedOwner(shard, now)) ? r : null;
  }

  /** Bytes of keys and values a range holds (its transfer size, less framing): the driver bounds it. */
  rangeBytes(shard: number): number {
    return this.rangeAt(shard).bytes;
  }

  /** Number of keys with a value in a range (tombstones not counted). */
  rangeKeys(shard: number): number {
    return this.rangeAt(shard).keys;
  }

  /** Entries of a range waiting for their deadline here (values with a ttl; stale heap items included). */
  rangeExpiring(shard: number): number {
    return this.rangeAt(shard).expiries.size;
  }

  /** A range's configuration epoch and whether this node serves it now (active owner with a valid lease). */
  rangeState(shard: number, now: number): { epoch: number; members: number; member: boolean; owner: boolean; active: boolean; leased: boolean; leaseLeft: number; inflight: number; queued: number; moving: boolean; memberNames: readonly string[] } {
    const r = this.rangeAt(shard);
    const c = r.config;
    const leaseLeft = r.active ? Math.max(0, r.lease.validUntil - Math.max(now, this.now)) : 0;
    return {
      epoch: c?.epoch ?? 0, members: c?.members.length ?? 0, member: this.isMember(c), owner: sameMember(c?.members[0], this.self), active: r.active,
      leased: this.isLeasedOwner(shard, now), leaseLeft: Number.isFinite(leaseLeft) ? leaseLeft : -1, inflight: r.inflight.size, queued: r.queued,
      // Its data is on its way to members: syncs of an activation, or installs of a proposal.
      moving: r.activating !== null || r.proposal?.phase === 'install',
      memberNames: c ? c.members.map((m) => m.name) : [],
    };
  }

  /**
   * A peer the driver's directory learnt of (the Chord ring, an attested session). It counts as alive for
   * placement only once it is heard from (a message from it, authenticated by the driver).
   */
  addPeer(name: string, ring: bigint): void {
    if (name === this.self.name || this.peers.has(name)) return;
    this.peers.set(name, { ring, inc: -1, heard: -Infinity, leaving: false });
  }

  /**
   * The range's configuration is what this node's view of the ring wants (its desired members, in order) and
   * its owner is active here or elsewhere by that configuration: placement has converged, by this node's view.
   */
  placementSettled(shard: number): boolean {
    const c = this.rangeAt(shard).config;
    if (!c) return false;
    const want = this.desired(shard);
    return want.length === c.members.length && want.every((m, i) => sameMember(m, c.members[i]));
  }

  /** Peers this node has heard from recently (its placement view). */
  livePeers(): string[] {
    return this.alive().filter((m) => m.name !== this.self.name).map((m) => m.name);
  }

  /**
   * The durable state of every range as log records: replaying them (through a new DataNode's log) gives the
   * same durable state as replaying every record made so far. The driver writes them as a snapshot (log
   * compaction) and after a failed append (the log is sealed again from them). Records of a range in order:
   * its configuration, its acceptor state, its data (and install ballot), its proposer round.
   */
  durableRecords(): LogRecord[] {
    // The incarnation first (on replay it discards older state), the position last: replaying a snapshot gives
    // exactly this position, never more (a larger one would hide a rollback of fewer records than the snapshot has).
    const out: LogRecord[] = [{ t: 'mark', shard: 0, pos: 0, inc: this.me.inc }];
    for (const h of this.bootHistory) out.push({ t: 'mark', shard: 0, pos: h.start, inc: this.me.inc, boot: h.boot });
    if (this.witness.size > 0) {
      out.push({
        t: 'wit', shard: 0,
        w: [...this.witness].map(([name, x]) => witnessed(name, x)),
      });
    }
    if (this.retired) out.push({ t: 'ret', shard: 0, inc: this.me.inc });
    for (const r of this.ranges) {
      if (r.config) {
        out.push({ t: 'cfg', shard: r.shard, config: r.config });
        if (r.promised || r.accepted) out.push({ t: 'acc', shard: r.shard, epoch: r.config.epoch, promised: r.promised, accepted: r.accepted });
      }
      if (r.config || r.data.size > 0 || r.install || r.sessions.next > 1) {
        out.push({
          t: 'snap', shard: r.shard, instance: r.install?.instance ?? 0, ballot: r.install?.ballot ?? null, synced: r.synced,
          data: dataOut(r.data, this.now, this.ttlRule), sessions: cloneSessions(r.sessions),
        });
      }
      if (r.round > 0) out.push({ t: 'round', shard: r.shard, round: r.round });
    }
    out.push({ t: 'mark', shard: 0, pos: this.pos, inc: this.me.inc });
    return out;
  }

  // ---- plumbing ----

  private rangeAt(shard: number): RangeState {
    const r = this.ranges[shard];
    assert.ok(r, `no range ${shard}`);
    return r;
  }

  private record(rec: LogRecord): void {
    if (rec.t === 'mark' && rec.boot !== undefined) this.noteBoot(rec.boot, rec.pos);
    this.pos++;
    if (rec.t !== 'mark' && rec.t !== 'wit') {
      applyRecord(this.rangeAt(rec.shard), rec, this.now, this.ttlRule);
      this.rangePos[rec.shard] = this.pos;
    } else {
      this.nodePos = this.pos;
    }
    this.persist.push(rec);
  }

  /** Per range, the position of its newest record made by this core; and of the newest node-level record (R1). */
  private readonly rangePos: number[] = [];
  private nodePos = 0;

  /**
   * R1 for reads made outside `step` (scans, the access documents: enclave/cluster/data-store.ts): the position the
   * range's state as shown now depends on; the driver lets such a read through only once it is durable (review-12 F1).
   */
  readDependency(shard: number): number {
    return this.readDep(shard);
  }

  /** The position a get's answer in range `shard` depends on (R1): every record of the range, every node-level one. */
  private readDep(shard: number): number {
    if (this.cfg.broken?.readsDependOnNothing) return 0;
    return Math.max(this.rangePos[shard] ?? 0, this.nodePos);
  }

  /** `toBoot`: the boot of `to` the message is meant for (default: the one this node admits, for its incarnation). */
  private send(to: string, body: PeerBody, toBoot?: number): void {
    if (to === this.self.name) this.selfQueue.push({ kind: 'peer', from: this.self, body });
    // The position is durable by the time the message leaves (persist-then-send); none while checking, so that
    // what peers witness of this node comes only from before its restart.
    else {
      const w = this.witness.get(to);
      const tb = toBoot ?? w?.boot ?? 0;
      // An explicit boot answers that boot's own message: any incarnation of it (-1) is meant.
      const ti = toBoot !== undefined ? -1 : (w?.inc ?? -1);
      this.out.push({ kind: 'peer', to, from: this.self, body, pos: this.checking ? -1 : this.pos, boot: this.boot, toBoot: tb, toInc: ti });
    }
  }

  private reply(to: string, rid: number, result: ClientResult): void {
    this.out.push({ kind: 'reply', to, rid, result });
  }

  private drainSelf(): void {
    for (let i = 0; i < 10_000 && this.selfQueue.length > 0; i++) {
      const m = this.selfQueue.shift() as Inbound;
      if (m.kind === 'peer') this.onPeer(m.from, m.body);
    }
    // Witnessed positions of votes and acks are durable before anything that relied on them is sent.
    if (this.witDirty.size > 0) {
      const w = [...this.witDirty].map((name): Witnessed => {
        const x = this.witness.get(name) as Witness;
        return witnessed(name, x);
      });
      this.witDirty.clear();
      this.record({ t: 'wit', shard: 0, w });
    }
  }

  // ---- rollback check (docs/consistency.md, "Rollback") ----

  private tickCheck(): void {
    const k = this.checking;
    if (!k) return;
    if (this.now - k.sentAt >= this.cfg.retryTicks) {
      k.sentAt = this.now;
      for (const name of this.peers.keys()) this.send(name, { t: 'witQ', nonce: k.nonce });
    }
    const age = this.now - this.startedAt;
    if (age < this.cfg.leaseTicks) return; // the quiet period: heartbeats bring the configurations we are in
    // B7c': what a retired member witnessed of this node, kept in this log, is checked as its answer would be (B6).
    for (const w of this.witness.values()) if (w.retired && w.handed && w.mine && this.behind(w.mine)) k.rolledBack = true;
    if (!k.rolledBack) {
      // Every other member of every configuration naming us must have answered, and (boot fencing) admitted this
      // boot: then no other boot of this member holds a boot lease from them, nor will again.
      let missing: string | null = null;
      for (const r of this.ranges) {
        const c = r.config;
        if (!c || !this.isMember(c)) continue;
        let admitted = 0;
        let absent: string | null = null;
        for (const m of c.members) {
          if (m.name === this.me.name) continue;
          const a = k.answers.get(m.name);
          if (a && (this.cfg.broken?.noBootFence || a.boot === this.boot)) admitted++;
          // B7c: it grants nothing any more, and its last lease has run out; and (review-7 F1) an answer this check got
          // holds its witnesses, so what it alone witnessed of this member is still checked (B6).
          // B7c' (seed 130678): or this node's own log holds them, with what the member witnessed of this node.
          else if (this.retiredFor(m) && (this.heldByAnswer(k.answers, m) || this.heldBySelf(m))) admitted++;
          else absent = m.name;
        }
        if (absent !== null && admitted < admitQuorum(c.members.length)) {
          missing = absent;
          break;
        }
      }
      if (missing === null) {
        this.checking = null;
        this.debug?.(`${this.me.name}/${this.me.inc} boot ${this.boot} witness check passed at pos ${this.loadedPos}`);
        return;
      }
      // Not admitted by enough members: a member that has not answered may be down, or another boot of this
      // member (the original of which this is a copy, or its copy) is live there. Keep waiting: acting now could
      // make two acceptors of one vote. (A copy beside a live original waits, acting in nothing, for as long as
      // the original runs; a restart waits until its previous boot has been silent for a lease at each member.)
      if (missing !== this.waitingFor) {
        this.waitingFor = missing;
        this.debug?.(`${this.me.name}/${this.me.inc} boot ${this.boot} waits for ${missing.slice(0, 12)} to admit it`);
      }
      return;
    }
    // Rolled back: our acceptor state may have forgotten votes. Become a new member (a new incarnation, no
    // configurations); reconfiguration brings us back in, with data installed from a majority.
    let inc = this.me.inc;
    for (const a of k.answers.values()) inc = Math.max(inc, a.inc);
    // Plus a random step: two boots that both take a new incarnation (a clone and its original) become two members.
    inc += 1 + (this.cfg.broken?.noBootFence ? 0 : Math.floor(this.rand() * incStepMax));
    this.debug?.(`${this.me.name}/${this.me.inc} ROLLED BACK (loaded pos ${this.loadedPos}); new incarnation ${inc}`);
    for (let s = 0; s < this.ranges.length; s++) this.ranges[s] = newRange(s);
    this.me = { ...this.me, inc };
    this.checking = null;
    this.bootHistory = [];
    this.record({ t: 'mark', shard: 0, pos: this.pos, inc });
    this.record({ t: 'mark', shard: 0, pos: this.pos, inc, boot: this.boot }); // this boot starts the incarnation
  }

  private onWitQ(from: Member, b: Extract<PeerBody, { t: 'witQ' }>): void {
    const w = this.witness.get(from.name);
    // Reached only by an admitted boot (or an older incarnation): live is false for the asker's own boot.
    this.send(from.name, this.witAnswer(b.nonce, w, false));
  }

  /** A witness answer, with the retired members whose witnesses this node holds (B7c counts only those). */
  private witAnswer(nonce: number, w: Witness | undefined, live: boolean): PeerBody {
    const a = { t: 'witA' as const, nonce, pos: w?.pos ?? 0, inc: w?.inc ?? 0, boot: w?.boot ?? 0, posBoot: w?.posBoot ?? 0, live };
    const held = this.retiredNamed(true);
    return held.length > 0 ? { ...a, held } : a;
  }

  private onWitA(from: Member, b: Extract<PeerBody, { t: 'witA' }>): void {
    const k = this.checking;
    if (!k || b.nonce !== k.nonce) return;
    if (this.behind(b)) {
      if (!k.rolledBack) this.debug?.(`${this.me.name}/${this.me.inc} ${from.name} witnessed ${b.inc}/${b.pos} of boot ${b.posBoot}: behind (loaded ${this.loadedPos})`);
      k.rolledBack = true;
    }
    // The latest answer decides admission (a peer admits this boot once the other one has been silent long enough).
    const prev = k.answers.get(from.name);
    if (prev && prev.boot === this.boot && b.boot !== this.boot) return; // a late answer from before it admitted us
    k.answers.set(from.name, { inc: b.inc, pos: b.pos, boot: b.boot, posBoot: b.posBoot, live: b.live, held: new Set((b.held ?? []).map(([n, i]) => `${n}/${i}`)) });
  }

  /**
   * Whether a peer's witness shows this log is not the newest state of this member: a higher incarnation; or a
   * position, carried by a boot this log holds, beyond where that boot's records end in this log (the log is an
   * older copy, or a copy that went on without what that boot did later: a clone's fork); or a boot this log
   * never held (another boot's continuation admitted instead: this log is a fork). Without the boot (older
   * witnesses): a position beyond the loaded one.
   */
  private behind(b: { inc: number; pos: number; posBoot: number }): boolean {
    if (b.inc !== this.me.inc) return b.inc > this.me.inc;
    if (this.cfg.broken?.noBootFence || b.posBoot === 0) return b.pos > this.loadedPos;
    const end = this.loadedBoots.get(b.posBoot);
    return end === undefined ? b.pos > 0 : b.pos > end;
  }

  private onBootA(from: Member, b: Extract<PeerBody, { t: 'bootA' }>): void {
    if (b.boot !== this.boot || b.t0 > this.now) return;
    const until = b.t0 + ownerLeaseTicks(this.cfg);
    const l = this.bootLease.get(from.name);
    if (!l || l.inc !== from.inc || until > l.until) this.bootLease.set(from.name, { until, inc: from.inc });
  }

  private isMember(c: Config | null, m: Member = this.self): boolean {
    return !!c && c.members.some((x) => sameMember(x, m));
  }

  // ---- placement (Chord decides who should hold a range; only configurations give authority) ----

  private alive(): Member[] {
    const out: Member[] = this.leaving ? [] : [this.self];
    for (const [name, p] of this.peers) {
      if (p.inc >= 0 && !p.leaving && this.now - p.heard <= this.cfg.suspectTicks && !this.retiredMember(name, p.inc)) out.push({ name, ring: p.ring, inc: p.inc });
    }
    return out;
  }

  /** Owner = first live node at or after the range's start point, then its R-1 successors. */
  private desired(shard: number): Member[] {
    const live0 = this.alive();
    const sig = live0.map((m) => `${m.name}/${m.inc}`).join(',');
    if (sig !== this.desiredSig) {
      this.desiredSig = sig;
      this.desiredCache.clear();
    }
    const hit = this.desiredCache.get(shard);
    if (hit) return hit;
    const start = shardStart(shard, this.cfg.shards);
    const live = live0.sort((a, b) => {
      const da = distance(start, a.ring);
      const db = distance(start, b.ring);
      return da < db ? -1 : da > db ? 1 : a.name < b.name ? -1 : 1;
    });
    const out = live.slice(0, this.cfg.replicas);
    this.desiredCache.set(shard, out);
    return out;
  }

  /**
   * Every heartbeatTicks, to every peer: liveness (`leaving`), this node's epochs (its report), and the
   * configurations the peer may lack. Without heartbeatFullEvery, all of them. With it, those newer than the
   * peer's report when that report is fresh (at most two heartbeat periods old, from the peer's current boot and
   * incarnation: a peer's state goes back only when it restarts, which a new boot shows, or takes a new
   * incarnation), else all of them, and all of them every heartbeatFullEvery-th time. Learning a configuration
   * is per range and only ever moves to a newer epoch, so a heartbeat carrying a subset teaches exactly what the
   * full one would have taught for those ranges and nothing for the rest, as if the full one had been lost for
   * them (docs/consistency.md, "Heartbeats").
   */
  private heartbeat(): void {
    this.heartbeatAt = this.now + this.cfg.heartbeatTicks;
    if (this.retired) {
      if (this.retiredCopy) return; // review-8 F4: the peers told it; it says nothing
      // B7a: the retirement, to every peer, every heartbeat until the driver stops this node. No configurations
      // (it acts in nothing), no boot-lease request.
      const rw = [...this.witness].map(([n, x]) => [n, x.inc, x.pos, x.posBoot] as const).slice(0, witnessesMax);
      for (const name of this.peers.keys()) this.send(name, { t: 'hb', leaving: true, configs: [], ret: true, rw });
      return;
    }
    // B7b: retired members that our configurations still name, passed on.
    const gone = this.retiredNamed(false);
    const configs = this.ranges.flatMap((r) => (r.config ? [r.config] : []));
    const every = this.cfg.heartbeatFullEvery ?? 1;
    const full = every <= 1 || this.heartbeats++ % every === 0;
    const epochs = every <= 1 ? undefined : this.ranges.map((r) => r.config?.epoch ?? 0);
    for (const name of this.peers.keys()) {
      const rep = full ? undefined : this.reports.get(name);
      const fresh = rep !== undefined && this.now - rep.at <= 2 * this.cfg.heartbeatTicks;
      const some = fresh ? configs.filter((c) => c.epoch > (rep.epochs[c.shard] ?? 0)) : configs;
      const hb = epochs ? { t: 'hb' as const, leaving: this.leaving, configs: some, epochs } : { t: 'hb' as const, leaving: this.leaving, configs: some };
      // The receiver itself retired: tell it we know (its echo, B7a'), whether or not our configurations name it, but
      // only once we hold its witnesses (heard from the retiring boot itself): review-8 F2, a co-member that learnt it
      // only by relay cannot stand in for it at a restart (B7c counts it only with an answer that holds them).
      const p = this.peers.get(name);
      const wr = this.witness.get(name);
      const echo = p !== undefined && p.inc >= 0 && this.retiredMember(name, p.inc) && wr?.handed === true;
      const others = gone.filter(([n]) => n !== name);
      const list = echo ? [...others, [name, (p as PeerView).inc] as const] : others;
      this.send(name, list.length > 0 ? { ...hb, gone: list } : hb);
      this.send(name, { t: 'bootQ', t0: this.now });
    }
  }

  // ---- configurations ----

  /** Adopt a decided configuration newer than ours (from a commit, a peer's gossip, a prepare's base). */
  private learn(c: Config): void {
    const r = this.rangeAt(c.shard);
    if (r.config && c.epoch <= r.config.epoch) return;
    if (r.active || r.activating) this.deactivate(r);
    if (r.proposal && r.proposal.base.epoch < c.epoch) r.proposal = null;
    this.record({ t: 'cfg', shard: c.shard, config: c });
    this.debug?.(`${this.self.name} learns range ${c.shard} epoch ${c.epoch} [${c.members.map((m) => `${m.name}/${m.inc}`).join(',')}]`);
    if (sameMember(c.members[0], this.self) && !this.checking && !this.supersededBy) this.startActivation(r);
  }

  private deactivate(r: RangeState): void {
    if (r.active) this.debug?.(`${this.self.name} inactive range ${r.shard} epoch ${r.config?.epoch}`);
    r.active = false;
    r.activating = null;
    r.lease = { validUntil: -Infinity, t0: -Infinity, grants: new Set() };
    const hint = r.config?.members[0]?.name ?? null;
    for (const f of r.inflight.values()) for (const w of [...f.replies, ...f.gets]) this.reply(w.client, w.rid, { ok: false, code: 'UNAVAILABLE' });
    for (const q of r.queues.values()) for (const p of q) this.reply(p.client, p.rid, { ok: false, code: 'NOT_OWNER', hint });
    r.inflight.clear();
    r.queues.clear();
    r.queued = 0;
    r.queuedBy.clear();
    r.byReq.clear();
    r.lastUse.clear();
  }

  private tickRange(r: RangeState): void {
    if (r.proposal) this.tickProposal(r, r.proposal);
    if (r.activating) this.tickActivation(r);
    if (r.active) this.tickOwner(r);
    if (!r.proposal && this.now >= r.nextTry) this.maybePropose(r);
  }

  private maybePropose(r: RangeState): void {
    const c = r.config;
    if (!c || this.leaving || this.checking || this.supersededBy) return;
    const want = this.desired(r.shard);
    const amOwner = sameMember(c.members[0], this.self);
    if (!sameMember(want[0], this.self)) {
      // Someone else should own it: stop renewing, so that its members can promise once our lease is over.
      if (amOwner && r.active && want[0] && this.now - this.startedAt > this.cfg.suspectTicks) this.deactivate(r);
      return;
    }
    if (amOwner && r.activating) return;
    // A fresh view is empty; and never below R members by our view (an ack means R durable copies).
    if (this.now - this.startedAt < this.cfg.suspectTicks) return;
    if (want.length < Math.min(this.cfg.replicas, c.members.length)) return;
    const sameSet = want.length === c.members.length && want.every((m, i) => sameMember(m, c.members[i]));
    if (amOwner && r.active && sameSet) return;
    this.startProposal(r, c, want);
  }

  private backoff(r: RangeState): void {
    r.nextTry = this.now + 1 + Math.floor(this.rand() * this.cfg.backoffTicksMax);
  }

  // ---- proposer ----

  private startProposal(r: RangeState, base: Config, desired: Member[]): void {
    if (r.active || r.activating) this.deactivate(r); // our own prepare fences our epoch
    const round = r.round + 1;
    this.record({ t: 'round', shard: r.shard, round });
    const ballot: Ballot = { round, name: this.self.name, inc: this.self.inc };
    r.proposal = {
      base, ballot, desired, phase: 'prepare', promises: new Map(), value: null, data: null, sessions: null,
      acks: new Set(), startedAt: this.now, sentAt: this.now,
    };
    for (const m of base.members) this.send(m.name, { t: 'prepare', base, ballot });
  }

  private tickProposal(r: RangeState, p: Proposal): void {
    if (this.now - p.startedAt > this.cfg.proposeTimeoutTicks) {
      r.proposal = null;
      this.backoff(r);
      return;
    }
    if (this.now - p.sentAt < this.cfg.retryTicks) return;
    p.sentAt = this.now;
    this.counters.resends++;
    if (p.phase === 'prepare') {
      for (const m of p.base.members) if (!p.promises.has(m.name)) this.send(m.name, { t: 'prepare', base: p.base, ballot: p.ballot });
    } else if (p.phase === 'install') {
      for (const m of (p.value as Config).members) if (!p.acks.has(m.name)) this.sendInstall(p, m.name);
    } else {
      for (const m of p.base.members) if (!p.acks.has(m.name)) this.send(m.name, { t: 'accept', base: p.base, ballot: p.ballot, value: p.value as Config });
    }
  }

  private sendInstall(p: Proposal, to: string): void {
    this.send(to, { t: 'install', base: p.base, ballot: p.ballot, value: p.value as Config, data: p.data as Map<string, Entry>, sessions: p.sessions as import('./types.ts').Sessions });
  }

  private proposalFor(shard: number, instance: number, ballot: Ballot): Proposal | null {
    const p = this.rangeAt(shard).proposal;
    return p && p.base.epoch === instance && cmpBallot(p.ballot, ballot) === 0 ? p : null;
  }

  private onPromise(from: Member, b: Extract<PeerBody, { t: 'promise' }>): void {
    const p = this.proposalFor(b.shard, b.instance, b.ballot);
    if (!p || p.phase !== 'prepare' || !this.isMember(p.base, from)) return;
    p.promises.set(from.name, { accepted: b.accepted, data: b.data, sessions: b.sessions });
    if (p.promises.size < majority(p.base.members.length)) return;
    let best: { ballot: Ballot; value: Config } | null = null;
    const data = new Map<string, Entry>();
    const sessions = emptySessions();
    for (const x of p.promises.values()) {
      if (x.accepted && (!best || cmpBallot(x.accepted.ballot, best.ballot) > 0)) best = x.accepted;
      mergeInto(data, sessions, x.data, x.sessions);
    }
    p.sentAt = this.now;
    if (best) {
      // Re-propose what may have been decided. Its install already reached every one of its members (accepts are
      // sent only after that), so it goes straight to accept: a member that died since cannot block it.
      p.value = best.value;
      p.phase = 'accept';
      for (const m of p.base.members) this.send(m.name, { t: 'accept', base: p.base, ballot: p.ballot, value: p.value });
      return;
    }
    p.value = { shard: p.base.shard, epoch: p.base.epoch + 1, members: p.desired };
    p.data = data;
    p.sessions = sessions;
    p.phase = 'install';
    for (const m of p.value.members) this.sendInstall(p, m.name);
  }

  private onInstallAck(from: Member, b: Extract<PeerBody, { t: 'installAck' }>): void {
    const p = this.proposalFor(b.shard, b.instance, b.ballot);
    if (!p || p.phase !== 'install' || !this.isMember(p.value, from)) return;
    p.acks.add(from.name);
    if (p.acks.size < (p.value as Config).members.length) return;
    p.phase = 'accept';
    p.acks.clear();
    p.sentAt = this.now;
    for (const m of p.base.members) this.send(m.name, { t: 'accept', base: p.base, ballot: p.ballot, value: p.value as Config });
  }

  private onAccepted(from: Member, b: Extract<PeerBody, { t: 'accepted' }>): void {
    const p = this.proposalFor(b.shard, b.instance, b.ballot);
    if (!p || p.phase !== 'accept' || !this.isMember(p.base, from)) return;
    p.acks.add(from.name);
    if (p.acks.size < majority(p.base.members.length)) return;
    const value = p.value as Config;
    const r = this.rangeAt(b.shard);
    r.proposal = null;
    const to = new Set([...p.base.members, ...value.members].map((m) => m.name));
    for (const name of to) this.send(name, { t: 'commit', config: value });
  }

  private onReject(b: Extract<PeerBody, { t: 'reject' }>): void {
    const r = this.rangeAt(b.shard);
    if (b.promised) r.round = Math.max(r.round, b.promised.round);
    if (b.reason === 'NOT_MEMBER') return;
    if (!this.proposalFor(b.shard, b.instance, b.ballot)) return;
    r.proposal = null;
    this.backoff(r);
  }

  // ---- acceptor ----

  /** Brings us to the proposal's instance; false (and an answer) if we cannot take part. */
  private enterInstance(from: Member, base: Config, ballot: Ballot): RangeState | null {
    const r = this.rangeAt(base.shard);
    if (r.config && r.config.epoch > base.epoch) {
      this.send(from.name, { t: 'stale', config: r.config });
      return null;
    }
    this.learn(base);
    const reject = (reason: 'NOT_MEMBER' | 'PROMISED' | 'LEASED' | 'QUIET'): null => {
      this.send(from.name, { t: 'reject', shard: base.shard, instance: base.epoch, ballot, reason, promised: r.promised });
      return null;
    };
    if (!this.isMember(r.config)) return reject('NOT_MEMBER');
    return r;
  }

  private leaseBinds(r: RangeState, from: Member): 'LEASED' | 'QUIET' | null {
    if (this.cfg.broken?.noLeaseWait) return null;
    if (this.now - this.startedAt < this.cfg.leaseTicks) return 'QUIET';
    // The owner that holds the lease may move its own range: it stopped serving before it asked.
    if (this.now < r.leaseUntil && !sameMember(r.config?.members[0], from)) return 'LEASED';
    return null;
  }

  private onPrepare(from: Member, b: Extract<PeerBody, { t: 'prepare' }>): void {
    const r = this.enterInstance(from, b.base, b.ballot);
    if (!r) return;
    const reason = this.leaseBinds(r, from) ?? (r.promised && cmpBallot(b.ballot, r.promised) < 0 ? 'PROMISED' : null);
    if (reason) {
      this.send(from.name, { t: 'reject', shard: r.shard, instance: b.base.epoch, ballot: b.ballot, reason, promised: r.promised });
      return;
    }
    if (r.active || r.activating) this.deactivate(r);
    this.record({ t: 'acc', shard: r.shard, epoch: b.base.epoch, promised: b.ballot, accepted: r.accepted });
    this.send(from.name, {
      t: 'promise', shard: r.shard, instance: b.base.epoch, ballot: b.ballot, accepted: r.accepted,
      data: dataOut(r.data, this.now, this.ttlRule), sessions: cloneSessions(r.sessions),
    });
  }

  private onAccept(from: Member, b: Extract<PeerBody, { t: 'accept' }>): void {
    const r = this.enterInstance(from, b.base, b.ballot);
    if (!r) return;
    if (r.promised && cmpBallot(b.ballot, r.promised) < 0) {
      this.send(from.name, { t: 'reject', shard: r.shard, instance: b.base.epoch, ballot: b.ballot, reason: 'PROMISED', promised: r.promised });
      return;
    }
    if (r.active || r.activating) this.deactivate(r);
    this.record({ t: 'acc', shard: r.shard, epoch: b.base.epoch, promised: b.ballot, accepted: { ballot: b.ballot, value: b.value } });
    this.send(from.name, { t: 'accepted', shard: r.shard, instance: b.base.epoch, ballot: b.ballot });
  }

  private onInstall(from: Member, b: Extract<PeerBody, { t: 'install' }>): void {
    const r = this.rangeAt(b.base.shard);
    if (!this.isMember(b.value)) return;
    if (r.config && r.config.epoch > b.base.epoch) return; // an older instance: already decided and moved past
    this.learn(b.base);
    const ack = (): void => this.send(from.name, { t: 'installAck', shard: r.shard, instance: b.base.epoch, ballot: b.ballot });
    if (r.install && r.install.instance === b.base.epoch && cmpBallot(b.ballot, r.install.ballot) < 0) return;
    if (r.install && r.install.instance === b.base.epoch && cmpBallot(b.ballot, r.install.ballot) === 0) {
      ack(); // a resend: the data is already durable
      return;
    }
    if (r.active || r.activating) this.deactivate(r);
    this.record({ t: 'snap', shard: r.shard, instance: b.base.epoch, ballot: b.ballot, synced: false, data: new Map(b.data), sessions: cloneSessions(b.sessions) });
    ack();
  }

  // ---- owner activation: every member gets the owner's state before it serves ----

  private startActivation(r: RangeState): void {
    const c = r.config as Config;
    r.activating = { acks: new Set([this.self.name]), startedAt: this.now, sentAt: this.now };
    this.record({ t: 'snap', shard: r.shard, instance: c.epoch, ballot: null, synced: true, data: dataOut(r.data, this.now, this.ttlRule), sessions: cloneSessions(r.sessions) });
    this.sendSyncs(r);
    this.checkActivated(r);
  }

  private sendSyncs(r: RangeState): void {
    const c = r.config as Config;
    const a = r.activating;
    if (!a) return;
    const data = dataOut(r.data, this.now, this.ttlRule);
    for (const m of c.members) if (!a.acks.has(m.name)) this.send(m.name, { t: 'sync', config: c, data, sessions: cloneSessions(r.sessions) });
  }

  private tickActivation(r: RangeState): void {
    const a = r.activating;
    if (!a) return;
    if (this.now - a.startedAt > this.cfg.proposeTimeoutTicks) {
      r.activating = null; // maybePropose starts a new epoch
      return;
    }
    if (this.now - a.sentAt >= this.cfg.retryTicks) {
      a.sentAt = this.now;
      this.counters.resends++;
      this.sendSyncs(r);
    }
  }

  private checkActivated(r: RangeState): void {
    const c = r.config as Config;
    if (!r.activating || r.activating.acks.size < c.members.length) return;
    r.activating = null;
    r.active = true;
    r.activeAt = this.now;
    r.lastUse.clear();
    this.debug?.(`${this.self.name} ACTIVE range ${r.shard} epoch ${c.epoch} [${c.members.map((m) => m.name).join(',')}] keys ${this.debugKeys ? [...r.data].map(([k, e]) => `${k}=v${e.version}@${e.epoch}`).join(' ') : r.data.size}`);
    r.lease = { validUntil: -Infinity, t0: -Infinity, grants: new Set() };
    this.renewLease(r);
  }

  private onSync(from: Member, b: Extract<PeerBody, { t: 'sync' }>): void {
    this.learn(b.config);
    const r = this.rangeAt(b.config.shard);
    if (!r.config || r.config.epoch !== b.config.epoch || !sameMember(r.config.members[0], from)) return;
    if (r.promised) {
      this.send(from.name, { t: 'fenced', shard: r.shard, epoch: r.config.epoch });
      return;
    }
    if (!r.synced) {
      this.record({ t: 'snap', shard: r.shard, instance: b.config.epoch, ballot: null, synced: true, data: new Map(b.data), sessions: cloneSessions(b.sessions) });
    }
    this.send(from.name, { t: 'syncAck', shard: r.shard, epoch: r.config.epoch });
  }

  private onSyncAck(from: Member, b: Extract<PeerBody, { t: 'syncAck' }>): void {
    const r = this.rangeAt(b.shard);
    if (!r.activating || r.config?.epoch !== b.epoch || !this.isMember(r.config, from)) return;
    r.activating.acks.add(from.name);
    this.checkActivated(r);
  }

  // ---- owner: leases ----

  private tickOwner(r: RangeState): void {
    const age = this.now - r.lease.t0;
    // Early only for a range whose last round is complete: an early round never supersedes one whose grants are
    // still on their way (a grant counts only for the round it answers).
    const early = this.renewTogether && 2 * age >= this.cfg.renewTicks && r.lease.grants.size >= (r.config as Config).members.length && !this.cfg.broken?.renewApart;
    if (age >= this.cfg.renewTicks || early) this.renewLease(r);
    for (const f of r.inflight.values()) {
      if (this.now - f.sentAt < this.cfg.retryTicks) continue;
      f.sentAt = this.now;
      this.counters.resends++;
      this.sendReplicate(r, f);
    }
    this.collectExpired(r);
  }

  // ---- owner: expiry (docs/consistency.md "Expiry") ----

  /**
   * Starts the replicated expiry of keys whose deadline has passed here, earliest first, at most the tick's budget
   * over all ranges. A key with a write in flight is skipped: checkCommitted looks at it again when that ends.
   */
  private collectExpired(r: RangeState): void {
    if (this.cfg.broken?.expiryLocalOnly) return;
    const h = r.expiries;
    for (let top = h.peek(); this.expireBudget > 0 && top && top.until <= this.now; top = h.peek()) {
      h.pop();
      const e = r.data.get(top.key);
      if (!e || e.until !== top.until || e.value === null) continue; // stale: overwritten since
      if (r.inflight.has(top.key)) continue;
      this.expireBudget--;
      this.startExpire(r, top.key);
    }
  }

  /** The owner's write of a tombstone over an expired value: an ordinary replicated write with no request id. */
  private startExpire(r: RangeState, key: string): Inflight {
    const c = r.config as Config;
    const prev = r.data.get(key) as Entry;
    assert.ok(prev && prev.value !== null && !r.inflight.has(key), 'expiry of a live, idle key');
    const op: WriteOp = { key, entry: { value: null, version: prev.version + 1, epoch: c.epoch }, req: null, open: null };
    const f: Inflight = {
      opId: this.nextOpId++, key, op, result: { ok: true, kind: 'write', version: prev.version + 1, existed: true }, prev,
      acks: new Set([this.self.name]), replies: [], sentAt: this.now, reqKey: null, digest: '', expire: true, gets: [],
    };
    r.inflight.set(key, f);
    if (this.cfg.broken?.expiryNotDurable) applyRecord(r, { t: 'w', shard: r.shard, epoch: c.epoch, op }, this.now, this.ttlRule);
    else this.record({ t: 'w', shard: r.shard, epoch: c.epoch, op });
    this.sendReplicate(r, f);
    this.checkCommitted(r, f);
    return f;
  }

  private renewLease(r: RangeState): void {
    const c = r.config as Config;
    r.lease.t0 = this.now;
    r.lease.grants = new Set([this.self.name]);
    for (const m of c.members) if (m.name !== this.self.name) this.send(m.name, { t: 'leaseReq', shard: r.shard, epoch: c.epoch, t0: this.now });
    this.checkLease(r);
  }

  private checkLease(r: RangeState): void {
    const c = r.config as Config;
    if (r.lease.grants.size < c.members.length) return;
    // A single-member range needs no grant: nobody else can promise in its instance.
    const until = c.members.length === 1 ? Infinity : r.lease.t0 + ownerLeaseTicks(this.cfg);
    r.lease.validUntil = Math.max(r.lease.validUntil, until);
  }

  private onLeaseReq(from: Member, b: Extract<PeerBody, { t: 'leaseReq' }>): void {
    const r = this.rangeAt(b.shard);
    const c = r.config;
    const ok = this.cfg.broken?.noFencing || (c && c.epoch === b.epoch && r.synced && !r.promised && sameMember(c.members[0], from));
    if (!ok) return;
    r.leaseUntil = Math.max(r.leaseUntil, this.now + this.cfg.leaseTicks);
    this.send(from.name, { t: 'leaseGrant', shard: b.shard, epoch: b.epoch, t0: b.t0 });
  }

  private onLeaseGrant(from: Member, b: Extract<PeerBody, { t: 'leaseGrant' }>): void {
    const r = this.rangeAt(b.shard);
    if (!r.active || r.config?.epoch !== b.epoch || b.t0 !== r.lease.t0 || !this.isMember(r.config, from)) return;
    r.lease.grants.add(from.name);
    this.checkLease(r);
  }

  // ---- owner: client requests ----

  private onClient(client: string, rid: number, op: ClientOp): void {
    const shard = op.kind === 'open' ? op.shard : shardOf(op.key, this.cfg.shards);
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.cfg.shards) {
      this.reply(client, rid, { ok: false, code: 'BAD_REQUEST' });
      return;
    }
    const r = this.rangeAt(shard);
    if (!r.active) {
      const owner = r.config?.members[0]?.name ?? null;
      this.reply(client, rid, { ok: false, code: 'NOT_OWNER', hint: owner === this.self.name ? null : owner });
      return;
    }
    if (op.kind === 'get') {
      this.onGet(r, client, rid, op.key);
      return;
    }
    if (op.kind === 'open') {
      // Opens wait in one queue (they are serialized on one key): bounded per range and per principal, so that one
      // caller's flood of opens cannot take the range's queue (queuedMax) from everyone else's writes.
      const q = r.queues.get(sessionKey);
      let mine = 0;
      if (q) for (const p of q) if (p.op.kind === 'open' && p.op.principal === op.principal) mine++;
      if ((q?.length ?? 0) >= opensQueuedMax || mine >= opensQueuedPerPrincipal) {
        this.reply(client, rid, { ok: false, code: 'UNAVAILABLE' });
        return;
      }
    }
    if (op.kind !== 'open') {
      // A write of a session, by its principal, marks the session busy (openOp never evicts a busy session for another).
      const s = r.sessions.table.get(op.session);
      if (s && s.owner === op.principal) r.lastUse.set(op.session, this.now);
    }
    // One digest per write request: checked now, again when it leaves the queue, and kept with its result.
    const digest = op.kind === 'open' ? '' : requestDigest(op);
    if (op.kind !== 'open' && !this.cfg.broken?.noDedup) {
      const early = this.checkRequest(r, op, digest);
      if (early === 'inflight') {
        this.addWaiter(r.byReq.get(`${op.session}:${op.seq}`), client, rid);
        return;
      }
      if (early) {
        this.reply(client, rid, early);
        return;
      }
    }
    const mine = r.queuedBy.get(op.principal) ?? 0;
    if (mine >= queuedPerPrincipalMax(this.cfg) && !op.principal.startsWith(internalPrincipalPrefix)) {
      this.reply(client, rid, { ok: false, code: 'BUSY' });
      return;
    }
    // review-5 R1: principals that already wait fill at most queuedMax; one more share is kept for principals with
    // nothing waiting, so that eight callers each at their share do not keep a ninth out of the range.
    if (r.queued >= this.cfg.queuedMax + (mine === 0 ? queuedPerPrincipalMax(this.cfg) : 0)) {
      this.reply(client, rid, { ok: false, code: 'UNAVAILABLE' });
      return;
    }
    const key = op.kind === 'open' ? sessionKey : op.key;
    if (!r.inflight.has(key) && !r.queues.has(key) && !(op.kind !== 'open' && expiredHere(r.data.get(key), this.now) && !this.cfg.broken?.expiryLocalOnly)) {
      // Nothing waits or is in flight on the key (and no expiry must go first): it starts now, never queued.
      this.startPending(r, key, { client, rid, op, digest });
      return;
    }
    const q = r.queues.get(key) ?? [];
    q.push({ client, rid, op, digest });
    r.queues.set(key, q);
    r.queued++;
    r.queuedBy.set(op.principal, mine + 1);
    if (!r.inflight.has(key)) this.startNext(r, key);
  }

  private onGet(r: RangeState, client: string, rid: number, key: string): void {
    if (this.now >= r.lease.validUntil) {
      this.reply(client, rid, { ok: false, code: 'UNAVAILABLE' });
      return;
    }
    const f = r.inflight.get(key);
    const e = f ? f.prev : r.data.get(key);
    if (expiredHere(e, this.now)) {
      if (this.cfg.broken?.expiryLocalOnly) {
        this.reply(client, rid, { ok: true, kind: 'get', found: false, value: null, version: (e as Entry).version + 1 });
        return;
      }
      // Expired here, but "absent" only once every member holds the tombstone: wait for the write on the key
      // (the expiry itself, started now if nothing is in flight), then answer from what it left.
      const w = f ?? this.startExpire(r, key);
      w.gets.push({ client, rid });
      if (w.gets.length > getsPerWriteMax) {
        const old = w.gets.shift() as { client: string; rid: number };
        this.reply(old.client, old.rid, { ok: false, code: 'UNAVAILABLE' });
      }
      return;
    }
    // R1: this answer depends on its range's records and the node's only (docs/durability.md).
    const dep = this.readDep(r.shard);
    if (!e || e.value === null) this.out.push({ kind: 'reply', to: client, rid, result: { ok: true, kind: 'get', found: false, value: null, version: e?.version ?? 0 }, dep });
    else this.out.push({ kind: 'reply', to: client, rid, result: { ok: true, kind: 'get', found: true, value: e.value, version: e.version }, dep });
  }

  /** null: a new request; 'inflight': the same request is being replicated; else the answer to give now. */
  private checkRequest(r: RangeState, op: Extract<ClientOp, { kind: 'put' | 'del' }>, digest: string): ClientResult | 'inflight' | null {
    const { session, seq, floor } = op;
    const ctr = sessionCounter(session);
    if (ctr < 1 || ctr >= r.sessions.next) return { ok: false, code: 'BAD_REQUEST' };
    const s = r.sessions.table.get(session);
    if (!s) return { ok: false, code: 'SESSION_EXPIRED' };
    // Another principal's session: refused as if unknown-shaped, and nothing about it is revealed.
    if (s.owner !== op.principal) return { ok: false, code: 'BAD_REQUEST' };
    if (!Number.isInteger(seq) || seq < s.floor) return { ok: false, code: 'STALE_REQUEST' };
    if (seq >= Math.max(s.floor, floor) + this.cfg.windowMax || floor > seq) return { ok: false, code: 'BAD_REQUEST' };
    // In flight first: the owner's own record already holds the result, but it is not acknowledged yet.
    const f = r.byReq.get(`${session}:${seq}`);
    if (f) return f.digest === digest ? 'inflight' : { ok: false, code: 'BAD_REQUEST' };
    const done = s.results.get(seq);
    if (done) return done.digest === digest ? toClient(done.result) : { ok: false, code: 'BAD_REQUEST' };
    return null;
  }

  private startNext(r: RangeState, key: string): void {
    const q = r.queues.get(key);
    if (!q || q.length === 0) return;
    // A value past its deadline is replaced by its tombstone before any write evaluates against it.
    if (expiredHere(r.data.get(key), this.now) && !this.cfg.broken?.expiryLocalOnly) {
      this.startExpire(r, key);
      return;
    }
    const p = q.shift();
    if (!p) return;
    r.queued--;
    const who = p.op.kind === 'get' ? '' : p.op.principal;
    const by = (r.queuedBy.get(who) ?? 0) - 1;
    assert.ok(by >= 0, 'queuedBy below zero');
    if (by === 0) r.queuedBy.delete(who);
    else r.queuedBy.set(who, by);
    if (q.length === 0) r.queues.delete(key);
    this.startPending(r, key, p);
  }

  /** Starts one request on `key` (nothing is in flight on it): its write record, replication, or its answer. */
  private startPending(r: RangeState, key: string, p: Pending): void {
    const c = r.config as Config;
    const prev = r.data.get(key);
    let op: WriteOp;
    let result: ClientResult;
    let reqKey: string | null = null;
    let digest = '';
    if (p.op.kind === 'open') {
      const o = this.openOp(r, p.op.principal);
      if (o === null) {
        // Every session it could evict is in use: refused, nothing changed (the caller tries again later).
        this.reply(p.client, p.rid, { ok: false, code: 'UNAVAILABLE' });
        this.startNext(r, key);
        return;
      }
      op = o;
      const id = (o.open as { id: number }).id;
      r.lastUse.set(id, this.now);
      if (o.open?.evict != null) r.lastUse.delete(o.open.evict);
      result = { ok: true, kind: 'open', session: id };
    } else if (p.op.kind === 'put' || p.op.kind === 'del') {
      if (!this.cfg.broken?.noDedup) {
        // Re-check: the same request may have completed while this one waited in the queue.
        const early = this.checkRequest(r, p.op, p.digest);
        if (early === 'inflight') {
          this.addWaiter(r.byReq.get(`${p.op.session}:${p.op.seq}`), p.client, p.rid);
          this.startNext(r, key);
          return;
        }
        if (early) {
          this.reply(p.client, p.rid, early);
          this.startNext(r, key);
          return;
        }
        reqKey = `${p.op.session}:${p.op.seq}`;
      }
      digest = p.digest;
      const w = this.writeOp(r, c.epoch, p.op, prev, digest);
      op = w.op;
      result = toClient(w.result);
    } else {
      assert.fail('gets are never queued');
    }
    const f: Inflight = { opId: this.nextOpId++, key, op, result, prev, acks: new Set([this.self.name]), replies: [{ client: p.client, rid: p.rid }], sentAt: this.now, reqKey, digest, expire: false, gets: [] };
    r.inflight.set(key, f);
    if (reqKey) r.byReq.set(reqKey, f);
    this.record({ t: 'w', shard: r.shard, epoch: c.epoch, op });
    this.sendReplicate(r, f);
    this.checkCommitted(r, f);
  }

  /** One more caller waiting for the write in flight `f` (bounded: the oldest waiter is answered UNAVAILABLE). */
  private addWaiter(f: Inflight | undefined, client: string, rid: number): void {
    if (!f) return;
    f.replies.push({ client, rid });
    if (f.replies.length > waitersPerWriteMax) {
      const old = f.replies.shift() as { client: string; rid: number };
      this.reply(old.client, old.rid, { ok: false, code: 'UNAVAILABLE' });
    }
  }

  /**
   * A new session of `owner`: its id is the range's counter with a random nonce (ids cannot be guessed; the
   * owner check is what makes a guessed one useless). Past the principal's own bound, its least recently used
   * session is evicted (busy or not: for the shared anonymous tag too, see review-3 R7b); past the range's bound, a session not
   * in use (`sessionIdleTicks`), of the principal holding the most sessions, least recently used first. Null when
   * every session it could evict is in use: the open is refused, so that no caller, however many keys it makes,
   * can push out a session another caller is using (a write in flight would come back EXPIRED, outcome unknown).
   */
  private openOp(r: RangeState, owner: string): WriteOp | null {
    const s = r.sessions;
    const idleFor = owner.startsWith(internalPrincipalPrefix) ? 0 : (this.cfg.sessionIdleTicks ?? 0);
    const idle = (id: number): boolean => idleFor <= 0 || this.now - (r.lastUse.get(id) ?? r.activeAt) >= idleFor;
    let evict: number | null = null;
    let mine = 0;
    let mineMin = Infinity;
    let mineLru: number | null = null;
    const counts = new Map<string, number>();
    for (const [id, x] of s.table) {
      counts.set(x.owner, (counts.get(x.owner) ?? 0) + 1);
      if (x.owner !== owner) continue;
      mine++;
      if (x.used < mineMin) { mineMin = x.used; mineLru = id; }
    }
    if (mine >= this.cfg.sessionsPerPrincipalMax) {
      evict = mineLru;
    } else if (s.table.size >= this.cfg.sessionsMax) {
      let most = -1;
      let min = Infinity;
      for (const [id, x] of s.table) {
        if (!idle(id)) continue;
        // With the idle rule: the principal holding the most first. Without it (the simulator's default): the least
        // recently used of all, as before (so that the simulator's regression seeds keep their schedules).
        const n = idleFor > 0 ? (counts.get(x.owner) ?? 0) : 0;
        if (n > most || (n === most && x.used < min)) { most = n; min = x.used; evict = id; }
      }
      if (evict === null) return null;
    }
    const id = s.next * sessionNonceSpan + Math.floor(this.rand() * sessionNonceSpan);
    return { key: null, entry: null, req: null, open: { id, owner, evict, used: s.clock + 1 } };
  }

  private writeOp(r: RangeState, epoch: number, op: Extract<ClientOp, { kind: 'put' | 'del' }>, prev: Entry | undefined, digest: string): { op: WriteOp; result: WriteResult } {
    // (Broken build only: an expired value that was never collected counts as absent, as if its tombstone were there.)
    const lapsed = !!this.cfg.broken?.expiryLocalOnly && expiredHere(prev, this.now);
    const live = prev && prev.value !== null && !lapsed ? prev.version : 0;
    const version = (prev?.version ?? 0) + (lapsed ? 1 : 0);
    let result: WriteResult;
    let entry: Entry | null = null;
    // The ttl in the ticks every node counts down (stretched once by the drift bound: docs/consistency.md "Expiry").
    const ttl = op.kind === 'put' && op.ttl ? { ttl: ttlTicksStretched(op.ttl, this.cfg.driftPpm) } : {};
    const grows = op.kind === 'put' ? entryBytes(op.key, { value: op.value, version: 0, epoch: 0, ...ttl }) - entryBytes(op.key, prev) : 0;
    if (op.ifVersion !== null && op.ifVersion !== live) {
      // Without a value, the version of its delete goes along (t), so that a client's floor can check "no value".
      result = live === 0 ? { ok: false, code: 'CONFLICT', version: 0, t: version } : { ok: false, code: 'CONFLICT', version: live };
    } else if (op.kind === 'put' && this.cfg.rangeBytesMax !== undefined && grows > 0 && r.bytes + grows > this.cfg.rangeBytesMax) {
      result = { ok: false, code: 'RANGE_FULL', version: live };
    } else if (op.kind === 'put') {
      entry = { value: op.value, version: version + 1, epoch, ...ttl };
      result = { ok: true, version: version + 1, existed: live > 0 };
    } else if (live > 0) {
      entry = { value: null, version: version + 1, epoch };
      result = { ok: true, version: version + 1, existed: true };
    } else {
      result = { ok: true, version, existed: false };
    }
    const req = this.cfg.broken?.noDedup ? null : { session: op.session, seq: op.seq, floor: op.floor, result, digest, used: r.sessions.clock + 1 };
    return { op: { key: op.key, entry, req, open: null }, result };
  }

  private sendReplicate(r: RangeState, f: Inflight): void {
    const c = r.config as Config;
    for (const m of c.members) if (!f.acks.has(m.name)) this.send(m.name, { t: 'replicate', shard: r.shard, epoch: c.epoch, opId: f.opId, op: f.op });
  }

  private onReplicate(from: Member, b: Extract<PeerBody, { t: 'replicate' }>): void {
    const r = this.rangeAt(b.shard);
    const c = r.config;
    const ok = this.cfg.broken?.noFencing || (c && c.epoch === b.epoch && sameMember(c.members[0], from) && r.synced && !r.promised);
    if (!ok) {
      this.send(from.name, { t: 'fenced', shard: b.shard, epoch: b.epoch });
      return;
    }
    // Persisted again even when we hold it already: the acknowledgement must follow a flush.
    const expiry = b.op.entry?.value === null && b.op.req === null && b.op.open === null;
    if (expiry && this.cfg.broken?.expiryNotDurable) applyRecord(r, { t: 'w', shard: b.shard, epoch: b.epoch, op: b.op }, this.now, this.ttlRule);
    else this.record({ t: 'w', shard: b.shard, epoch: b.epoch, op: b.op });
    this.send(from.name, { t: 'replicateAck', shard: b.shard, epoch: b.epoch, key: b.op.key ?? sessionKey, opId: b.opId });
  }

  private onReplicateAck(from: Member, b: Extract<PeerBody, { t: 'replicateAck' }>): void {
    const r = this.rangeAt(b.shard);
    const f = r.inflight.get(b.key);
    if (!r.active || r.config?.epoch !== b.epoch || !f || f.opId !== b.opId || !this.isMember(r.config, from)) return;
    f.acks.add(from.name);
    this.checkCommitted(r, f);
  }

  private checkCommitted(r: RangeState, f: Inflight): void {
    const c = r.config as Config;
    if (f.acks.size < c.members.length) return;
    r.inflight.delete(f.key);
    if (f.reqKey) r.byReq.delete(f.reqKey);
    if (f.expire) this.counters.expiredCollected++;
    for (const w of f.replies) this.reply(w.client, w.rid, f.result);
    if (r.queues.has(f.key)) this.startNext(r, f.key);
    // The value left may itself be past its deadline (it expired while this write was in flight, or this write
    // changed nothing): collect it now rather than wait for the heap, which may have dropped its item.
    else if (expiredHere(r.data.get(f.key), this.now) && !this.cfg.broken?.expiryLocalOnly) this.startExpire(r, f.key);
    for (const g of f.gets) this.onGet(r, g.client, g.rid, f.key);
  }

  private onFenced(b: Extract<PeerBody, { t: 'fenced' }>): void {
    const r = this.rangeAt(b.shard);
    if ((r.active || r.activating) && r.config?.epoch === b.epoch) {
      this.counters.fenced++;
      this.deactivate(r);
    }
  }

  // ---- dispatch ----

  private onPeer(from: Member, b: PeerBody): void {
    // The codec validates shapes and bounds; a range number outside this image's is dropped here.
    const shard = 'shard' in b ? b.shard : 'base' in b ? b.base.shard : 'config' in b ? b.config.shard : 0;
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.cfg.shards) return;
    if (b.t === 'install' && b.value.shard !== shard) return;
    if (b.t === 'accept' && b.value.shard !== shard) return;
    if (from.name !== this.self.name) this.heard(from);
    // While checking for a rollback, or replaced by another boot: no vote, no acknowledgement, no lease (a silent
    // drop; the sender retries). Without a boot lease from another member of the configuration in question, the
    // same (docs/consistency.md, "Boots and clones": a boot that peers may have replaced stops by its own clock).
    if (actTypes.has(b.t)) {
      if (this.checking || this.supersededBy) return;
      const r = this.ranges[shard] as RangeState;
      const members = b.t === 'prepare' || b.t === 'accept' || b.t === 'install' ? b.base.members : b.t === 'sync' ? b.config.members : r.config?.members;
      if (!this.bootLeased(members)) return;
    }
    switch (b.t) {
      case 'witQ': return this.onWitQ(from, b);
      case 'witA': return this.onWitA(from, b);
      case 'bootA': return this.onBootA(from, b);
      case 'bootQ': return; // answered in step (it needs the asker's boot)
      case 'superseded':
        if (b.boot === this.boot && !this.checking) this.fence(from.name);
        return;
      case 'hb':
        this.onHeartbeat(from, b);
        return;
      case 'prepare': return this.onPrepare(from, b);
      case 'promise': return this.onPromise(from, b);
      case 'reject': return this.onReject(b);
      case 'stale':
        this.learn(b.config);
        return;
      case 'install': return this.onInstall(from, b);
      case 'installAck': return this.onInstallAck(from, b);
      case 'accept': return this.onAccept(from, b);
      case 'accepted': return this.onAccepted(from, b);
      case 'commit':
        this.learn(b.config);
        return;
      case 'sync': return this.onSync(from, b);
      case 'syncAck': return this.onSyncAck(from, b);
      case 'replicate': return this.onReplicate(from, b);
      case 'replicateAck': return this.onReplicateAck(from, b);
      case 'fenced': return this.onFenced(b);
      case 'leaseReq': return this.onLeaseReq(from, b);
      case 'leaseGrant': return this.onLeaseGrant(from, b);
    }
  }

  private heard(from: Member): void {
    const p = this.peers.get(from.name);
    if (!p) {
      this.peers.set(from.name, { ring: from.ring, inc: from.inc, heard: this.now, leaving: false });
      return;
    }
    // An older incarnation's message: a delayed one, or an original whose clone took a new incarnation. Placement
    // follows the newer one while it is heard; once it is silent (the clone is gone), the older one again.
    if (from.inc < p.inc && this.now - p.heard <= this.cfg.suspectTicks) return;
    p.inc = from.inc;
    p.heard = this.now;
  }

  private onHeartbeat(from: Member, b: Extract<PeerBody, { t: 'hb' }>): void {
    const p = this.peers.get(from.name);
    if (p && p.inc === from.inc) p.leaving = b.leaving;
    if (b.ret) this.noteRetired(from.name, from.inc, b.rw); // without rw (an image from before review-7): not held
    for (const [name, inc] of b.gone ?? []) this.noteRetired(name, inc);
    for (const c of b.configs) if (c.shard >= 0 && c.shard < this.cfg.shards) this.learn(c);
  }
}

/**
 * What identifies a write request beyond its (session, seq): its kind, key, value (by hash) and ifVersion, as
 * 32 hex digits. A remembered result answers a retry only if the retry's digest matches.
 */
/** An operation's digest, computed once per operation object (it is asked for at entry and again when it starts). */
const digestMemo = new WeakMap<object, string>();

export function requestDigest(op: Extract<ClientOp, { kind: 'put' | 'del' }>): string {
  const known = digestMemo.get(op);
  if (known !== undefined) return known;
  const d = computeDigest(op);
  digestMemo.set(op, d);
  return d;
}

/**
 * SHA-256 of: `kind \0 ifVersion \0 key length \0`, the key (latin1), for a put SHA-256 of its value, and for a put
 * with a ttl `\0ttl<ttl>`; the first 32 hex digits. One one-shot hash over the concatenation (the same bytes the
 * streaming form hashed: digests in sealed session tables stay valid; test/request-path.test.ts pins it).
 */
export function computeDigest(op: Extract<ClientOp, { kind: 'put' | 'del' }>): string {
  const head = `${op.kind}\0${op.ifVersion ?? -1}\0${op.key.length}\0`;
  const tail = op.kind === 'put' && op.ttl ? `\0ttl${op.ttl}` : '';
  const keyBytes = op.key.length; // latin1: one byte per character
  const buf = Buffer.allocUnsafe(head.length + keyBytes + (op.kind === 'put' ? 32 : 0) + tail.length);
  let at = buf.write(head, 0, 'latin1');
  at += buf.write(op.key, at, 'latin1');
  if (op.kind === 'put') at += hash('sha256', Buffer.from(op.value, 'latin1'), 'buffer').copy(buf, at);
  at += buf.write(tail, at, 'latin1');
  return hash('sha256', buf.subarray(0, at), 'hex').slice(0, digestChars);
}

export const digestChars = 32;

function toClient(r: WriteResult): ClientResult {
  return r.ok ? { ok: true, kind: 'write', version: r.version, existed: r.existed } : r;
}

