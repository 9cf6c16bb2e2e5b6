/**
 * The enclave's data path: the fenced, deterministic data core (enclave/data/, docs/consistency.md) run by its
 * DataDriver, with the enclave's monotonic clock, the sealed log (enclave/persist.ts) and attested peer
 * sessions as transport.
 *
 * - Members are named by their ring id (64 hex digits: SHA-256 of the node's attested identity key). A peer
 *   message's sender is the attested key of the session it came on, never a name in the message, so no node
 *   can speak for another. Addresses only say where to dial (from the Chord ring driver, and the address a
 *   peer gives for itself); every call pins the ring id it expects (PeerPool `expectId`), so a host that
 *   routes a name to another enclave is caught. A node that lost its sealed state gets a new identity, hence
 *   a new name: it is a new member (the core's incarnation stays 0).
 * - The core's `peers` directory is fed from the ring driver's nodes and from attested senders; the core
 *   counts a node alive for placement only once it has heard from it.
 * - Time: ticks of `dataTickMs` on performance.now() (monotonic, the enclave's own; never the host's).
 * - Client operations run at the range's owner: served here when this node is the active owner, else
 *   forwarded over the attested peer session to the owner the local configuration names (following the
 *   owner's NOT_OWNER hint), retried while retryable (`retryable`, the one definition) until the deadline.
 *   Writes carry the client's (session, seq, floor) from the SDK, so every retry, here or from the SDK
 *   through any node, is the same request to the core (exactly once).
 */
import { randomInt } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { EkvError } from '../../protocol/errors.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import {
  bootIdMax, type ClientOp, type ClientResult, type Config, type DataConfig, DataDriver, type DataLog, type Entry, expiredHere, type LogRecord, type Member, type Outbound, type PeerBody,
  type ReadMark, type ScanView, shardOf, validateDataConfig,
} from '../data/index.ts';
import { idToBytes, nodeIdFromPublicKey, type NodeRef } from '../ring/index.ts';
import { batchBodiesMax, chunksOf, dataMessageBytesMax, decodePeerBatch, encodePeerBatch, rangeBytesMax, Reassembler } from './data-wire.ts';
import { dataTickMs, encodeForward, internalTag } from './op-wire.ts';
import type { PeerPool } from './peers.ts';
import type { RingDriver } from './ring-driver.ts';

export { dataTickMs };

/** The data core's settings in the enclave (ticks of 10 ms): lease 3 s (renewed every 1.2 s), suspicion 2 s, heartbeats 500 ms (every configuration each 5 s). */
export const enclaveDataConfig: Readonly<DataConfig> = validateDataConfig({
  replicas: 3,
  shards: 64,
  leaseTicks: 300,
  driftPpm: 10_000,
  leaseMarginTicks: 10,
  renewTicks: 120,
  heartbeatTicks: 50,
  // A heartbeat carries the configurations the peer's fresh report lacks, all 64 every 10th (5 s) and to a peer
  // without one (issue 15: each carried all 64, ~24 KB, every 500 ms to every peer). docs/consistency.md "Heartbeats".
  // (The e2e-jepsen row 3 stall once blamed on this was the ring: relaunched nodes stuck joining, with 1 as with
  // 10; docs/membership.md "Restarts", a join lookup clears the joiner's old entry.)
  heartbeatFullEvery: 10,
  suspectTicks: 200,
  retryTicks: 50,
  proposeTimeoutTicks: 500,
  backoffTicksMax: 100,
  sessionsMax: 1024,
  sessionsPerPrincipalMax: 32,
  windowMax: 64,
  queuedMax: 4096,
  rangeBytesMax,
  // 30 s: longer than any gap between the attempts of one write (the entry node's 8 s, the SDK's request timeout).
  sessionIdleTicks: 3000,
});

/** How long a client operation is retried by the node that took it (the SDK retries past this). */
export const clientOpDeadlineMs = 8000;
/** One attempt at the local core (a write waits for every member's durable acknowledgement). */
export const localAttemptMs = 3000;
export const peerCallTimeoutMs = 4000;
/** Forwarding hops one attempt may take (following owners' hints). */
export const forwardHopsMax = 3;
/** Data-message bytes held for one peer (unanswered calls, or its socket's unsent bytes): one full range and room for small messages. */
export const peerOutboundBytesMax = dataMessageBytesMax + 8 * 1024 * 1024;
/** Data-message bytes held for all peers together. */
export const outboundBytesMax = 3 * dataMessageBytesMax;
const directoryRefreshMs = 250;
/** A peer's small data batches go one-way, but one every this often (at most one in flight) as a call: the link's liveness probe. */
export const probeEveryMs = 100;
/** The largest batch a due probe may carry past the outbound budget (one per peer at a time). */
export const probeBytesMax = 64 * 1024;

/** The one definition of "try again": nothing was decided, or the outcome is unknown and the request id makes a retry safe. */
export function retryable(code: string): boolean {
  return code === 'UNAVAILABLE' || code === 'NOT_OWNER' || code === 'TIMEOUT' || code === 'CLOSED' || code === 'BUSY';
}

export function nodeName(id: bigint): string {
  return id.toString(16).padStart(64, '0');
}

function nameToId(name: string): bigint | null {
  return /^[0-9a-f]{64}$/.test(name) ? BigInt('0x' + name) : null;
}

/** DataStore.metrics(): see there. Lease seconds: null for a range this node does not serve, or one with no end (R = 1). */
export interface DataMetrics {
  ranges: Array<{ range: number; epoch: number; members: number; role: 'owner' | 'member' | 'none'; leaseSeconds: number | null }>;
  owned: number;
  leased: number;
  member: number;
  underReplicated: number;
  backlog: number;
  expiring: number;
  leaseMinSeconds: number | null;
  epochMax: number;
  expiredCollected: number;
  resends: number;
  fenced: number;
  dropped: number;
}

export interface DataStoreInit {
  self: NodeRef;
  peers: PeerPool;
  ring: RingDriver;
  log: DataLog;
  /** This node founded the ring on this boot: every range starts as [self] at epoch 1. */
  founded: boolean;
  /** R (the image's). */
  replicas: number;
  /** Writes need a configuration with at least this many members (R; 1 on a single-node image). */
  minMembers: number;
  logger: Logger;
  config?: Partial<DataConfig>;
  /** Test seam only (the controls of test/attacks/founding.test.ts): DataNodeInit.seizeAll. */
  seizeAll?: boolean;
}

/** A client result as it crosses between enclaves: a value as bytes (a latin1 string would double in CBOR). */
export function resultToWire(r: ClientResult): Record<string, unknown> {
  return r.ok && r.kind === 'get' ? { ...r, value: r.value === null ? null : Buffer.from(r.value, 'latin1') } : { ...r };
}

/** A client result as it crosses between enclaves (the owner's answer to a forwarded operation), validated. */
function wireResult(x: unknown): ClientResult {
  const o = (x ?? {}) as Record<string, unknown>;
  const n = (v: unknown): number => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : -1);
  if (o.ok === true) {
    if (o.kind === 'get' && typeof o.found === 'boolean' && (o.value === null || o.value instanceof Uint8Array) && n(o.version) >= 0) {
      const value = o.value === null ? null : Buffer.from(o.value.buffer, o.value.byteOffset, o.value.length).toString('latin1');
      return { ok: true, kind: 'get', found: o.found, value, version: n(o.version) };
    }
    if (o.kind === 'write' && typeof o.existed === 'boolean' && n(o.version) >= 0) return { ok: true, kind: 'write', version: n(o.version), existed: o.existed };
    if (o.kind === 'open' && n(o.session) >= 1) return { ok: true, kind: 'open', session: n(o.session) };
  } else if (o.ok === false) {
    if ((o.code === 'CONFLICT' || o.code === 'RANGE_FULL') && n(o.version) >= 0) {
      return o.t === undefined ? { ok: false, code: o.code, version: n(o.version) } : { ok: false, code: o.code, version: n(o.version), t: n(o.t) };
    }
    if (o.code === 'NOT_OWNER') return { ok: false, code: 'NOT_OWNER', hint: typeof o.hint === 'string' && o.hint.length <= 64 ? o.hint : null };
    if (o.code === 'UNAVAILABLE' || o.code === 'SESSION_EXPIRED' || o.code === 'STALE_REQUEST' || o.code === 'BAD_REQUEST' || o.code === 'BUSY') return { ok: false, code: o.code };
  }
  throw new EkvError('PROTOCOL', 'malformed forwarded result');
}

export class DataStore {
  readonly driver: DataDriver;
  readonly self: NodeRef;
  readonly selfMember: Member;
  readonly cfg: Readonly<DataConfig>;
  readonly stats = {
    /** Data messages in and out, and the batches (`dm` RPCs, one per peer per event-loop turn) they went out in. */
    forwards: 0, undeliverable: 0, peerMessagesIn: 0, peerMessagesOut: 0, peerBatchesOut: 0, chunksOut: 0,
    /** Of peerBatchesOut, those sent one-way (not answered; the rest are calls: liveness probes and chunks). */
    peerOneWay: 0,
    /** Encoded bytes of the data batches sent (before the secure channel's framing). */
    peerBytesOut: 0,
    /** Times the data log failed (the node failed closed), and times it was sealed again and the core rebuilt. */
    persistFailures: 0, recoveries: 0,
    /** Data messages not sent: the peer's outbound budget was full, or a large message to it was still out. */
    outboundDropped: 0,
  };
  private readonly c: DataStoreInit;
  /** name → address to dial (never trusted: calls pin the name's ring id). */
  private readonly addrs = new Map<string, string>();
  private readonly waiting = new Map<number, (r: ClientResult) => void>();
  private rid = 0;
  private msgId = 0;
  private readonly reassembly = new Reassembler();
  private readonly timers: NodeJS.Timeout[] = [];
  private activeSig = '';
  private readonly ownershipListeners: Array<() => void> = [];
  /** The principal tag of this node's own sessions: no client can send it (tags are derived, op-wire.ts). */
  private readonly internalTag: string;
  /** Sessions of this node's own writes (access documents), per range. */
  private readonly internal = new Map<number, { session: number; seq: number; lock: Promise<unknown> }>();

  constructor(c: DataStoreInit) {
    this.c = c;
    this.self = c.self;
    this.cfg = validateDataConfig({ ...enclaveDataConfig, replicas: c.replicas, ...c.config });
    this.selfMember = { name: nodeName(c.self.id), ring: c.self.id, inc: 0 };
    this.internalTag = internalTag(this.selfMember.name);
    const genesis: Config[] | undefined = c.founded && !c.seizeAll
      ? Array.from({ length: this.cfg.shards }, (_, shard) => ({ shard, epoch: 1, members: [this.selfMember] }))
      : undefined;
    this.driver = new DataDriver({
      self: this.selfMember,
      config: this.cfg,
      peers: [],
      ...(genesis ? { genesis } : {}),
      log: c.log,
      ...(c.seizeAll ? { seizeAll: true } : {}),
      send: (m) => this.send(m),
      clock: () => this.nowTicks(),
      rand: Math.random,
      // Each core's boot id comes from the enclave's CSPRNG, never from the host.
      bootId: () => randomInt(1, bootIdMax), // [1, 2^48 - 1] (randomInt's span is below 2^48)
      every: (ms, fn) => {
        const t = setInterval(fn, ms);
        t.unref();
        return { stop: () => clearInterval(t) };
      },
      after: (ms, fn) => void setTimeout(fn, ms).unref(),
      tickMs: dataTickMs,
      reloadMs: 500,
      ...(c.logger.isLevelEnabled('debug') ? { debug: (line: string) => c.logger.debug(line) } : {}),
      onRecovered: () => {
        this.stats.recoveries++;
        c.logger.warn('data log sealed again: serving from it');
      },
      onFailClosed: (err) => {
        this.stats.persistFailures++;
        c.logger.error({ err: (err as Error).message }, 'data log failed: failing closed until it is sealed again');
      },
    });
  }

  async start(): Promise<void> {
    await this.driver.start();
    this.refreshDirectory();
    const t = setInterval(() => {
      this.refreshDirectory();
      this.watchOwnership();
    }, directoryRefreshMs);
    t.unref();
    this.timers.push(t);
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.driver.stop();
    for (const w of this.waiting.values()) w({ ok: false, code: 'UNAVAILABLE' });
    this.waiting.clear();
  }

  /** Graceful leave: stop owning; give the others a moment to take the ranges over. */
  async leave(waitMs = 2000): Promise<void> {
    this.driver.leave();
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline && this.memberOfAny()) await sleep(100);
  }

  /**
   * Decommission: leave for good (docs/consistency.md, "Retirement: leaving for good", B7). Leaves, waits up to
   * `waitMs` for the ranges to move away, then retires: the `ret` record is made durable and the peers are told,
   * so that co-members of a range still naming this node never wait for it when they restart. Refused (REFUSED:
   * the node only left, as on a normal stop) while a configuration naming it has fewer than three members: its
   * data would go with it. A node started again from this sealed state is a new member.
   */
  async decommission(waitMs = 30_000, heardWaitMs = 30_000): Promise<{ retired: boolean; rangesStillNamingIt: number; heard: boolean }> {
    await this.leave(waitMs);
    // Only a boot that is the member may retire it (review-7 F6): a node still checking its state after its start
    // is given (bounded) time to finish.
    const checked = Date.now() + heardWaitMs;
    while ((this.driver.node?.checkingState ?? false) && Date.now() < checked) await sleep(this.cfg.heartbeatTicks * dataTickMs);
    const rangesStillNamingIt = this.rangesNamingSelf();
    if (!this.driver.retire()) return { retired: false, rangesStillNamingIt, heard: false };
    // The retiring heartbeat leaves once the record is durable and repeats every heartbeat: wait (bounded) until a
    // co-member of every range naming this node echoed it (B7a'), so that it is not lost with this node.
    const deadline = Date.now() + heardWaitMs;
    while (!this.retirementHeard() && Date.now() < deadline) await sleep(this.cfg.heartbeatTicks * dataTickMs);
    // review-7 F5: a failed append of the record makes the driver rebuild the core from what is durable: without
    // the record it is the same member again (not retired: say so); with it, retired (a retired log stays so).
    // Review-12 L1: the flag is set when the record is made; it is reported only once every record handed to the
    // log so far (the `ret` one included) was handled: durable, or failed and rebuilt from what is.
    await this.driver.idle();
    const retired = this.driver.node?.hasRetired ?? false;
    return { retired, rangesStillNamingIt, heard: retired && this.retirementHeard() };
  }

  private retirementHeard(): boolean {
    return this.driver.node?.retirementHeard ?? false;
  }

  private rangesNamingSelf(): number {
    const n = this.driver.node;
    if (!n) return 0;
    let count = 0;
    for (let s = 0; s < this.cfg.shards; s++) if (n.configOf(s)?.members.some((m) => m.name === this.selfMember.name)) count++;
    return count;
  }

  private memberOfAny(): boolean {
    const n = this.driver.node;
    if (!n) return false;
    for (let s = 0; s < this.cfg.shards; s++) if (n.configOf(s)?.members.some((m) => m.name === this.selfMember.name)) return true;
    return false;
  }

  // ---- directory and transport ----

  private learn(name: string, id: bigint, addr: string | null): void {
    if (name === this.selfMember.name) return;
    if (addr !== null) this.addrs.set(name, addr);
    this.driver.addPeer(name, id);
  }

  /** The Chord ring's view (nodes learnt from attested peers' ring messages) names whom to heartbeat. */
  private refreshDirectory(): void {
    const core = this.c.ring.core;
    const refs = [core.predecessor, ...core.successors, ...core.fingers];
    for (const r of refs) if (r) this.learn(nodeName(r.id), r.id, r.addr);
  }

  private send(m: Outbound): void {
    if (m.kind === 'reply') {
      const w = this.waiting.get(m.rid);
      if (w) {
        this.waiting.delete(m.rid);
        w(m.result);
      }
      return;
    }
    // Batched per peer for this turn of the event loop: one RPC carries every message the core sent that peer.
    // One batch per peer and boot pair: a message meant for one boot of a name never travels as another's.
    // The turn ends at setImmediate, not at a microtask: the driver hands over each persisted batch's messages
    // in its own promise continuation (one per core step that made records), and a microtask flush would
    // run between two of them, sending one RPC per step, so per client write, instead of one per turn.
    let q = this.outbox.get(m.to);
    if (q && (q.boot !== m.boot || q.toBoot !== m.toBoot || q.toInc !== m.toInc || q.inc !== m.from.inc)) {
      this.flushTo(m.to);
      q = undefined;
    }
    if (!q) {
      q = { inc: m.from.inc, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc, bodies: [] };
      this.outbox.set(m.to, q);
    }
    // One position for the batch: the lowest of its messages' (each was durable before it was handed here).
    q.pos = Math.min(q.pos, m.pos);
    q.bodies.push(m.body);
    if (q.bodies.length >= batchBodiesMax) this.flushTo(m.to);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        for (const to of [...this.outbox.keys()]) this.flushTo(to);
      });
    }
  }

  private readonly outbox = new Map<string, { inc: number; pos: number; boot: number; toBoot: number; toInc: number; bodies: PeerBody[] }>();
  private flushScheduled = false;

  private flushTo(to: string): void {
    const q = this.outbox.get(to);
    this.outbox.delete(to);
    if (!q || q.bodies.length === 0) return;
    const addr = this.addrs.get(to);
    const id = nameToId(to);
    if (!addr || id === null) {
      this.stats.undeliverable += q.bodies.length;
      return;
    }
    const bytes = encodePeerBatch(q.bodies);
    const chunks = chunksOf(bytes);
    const large = chunks.length > 1;
    // The outbound memory bound (per peer and in all): what this node still holds for a peer is the larger of
    // the bytes of its calls not yet answered and what the peer's socket has not handed to the OS. Past the
    // budget the batch is dropped (the core resends what matters after retryTicks); a large (chunked) message
    // is never sent while another large one to that peer is still out, so a whole range is not queued twice.
    const out = this.outbound.get(to) ?? { bytes: 0, large: 0 };
    const held = Math.max(out.bytes, this.c.peers.queuedBytes?.(addr) ?? 0);
    const over = (large && out.large > 0) || held + bytes.length > peerOutboundBytesMax || this.overTotal(bytes.length);
    // The link's liveness probe: a small batch as a call when none is in flight and none went out for
    // probeEveryMs, so a link that stopped answering still times out and is replaced (docs/consistency.md
    // "Transport"). A due probe goes even past the budget (one per peer at a time, at most probeBytesMax), or a
    // link the host stalls right at the bound would never be found dead.
    const probe = !large && this.probeDue(to);
    if (over && !(probe && bytes.length <= probeBytesMax)) {
      this.stats.outboundDropped += q.bodies.length;
      return;
    }
    // b: this core's boot; tb, ti: the boot of the peer's name this core admits (0: none) and for which incarnation
    // (-1: any). (i and o are the RPC envelope's.)
    const head = { inc: q.inc, p: q.pos, b: q.boot, tb: q.toBoot, ti: q.toInc, a: this.self.addr };
    this.stats.peerMessagesOut += q.bodies.length;
    this.stats.peerBatchesOut++;
    this.stats.peerBytesOut += bytes.length;
    // Any other batch of one chunk goes one-way on an open connection: what it holds of our memory is then the
    // socket's unsent bytes (counted above). On a connection still opening it is a call, counted until answered.
    if (!large && !probe && this.c.peers.notify(addr, 'dm', { ...head, m: bytes }, id)) {
      this.stats.peerOneWay++;
      return;
    }
    out.bytes += bytes.length;
    if (large) out.large++;
    this.outbound.set(to, out);
    this.outboundTotal += bytes.length;
    let left = chunks.length;
    const settled = (n: number): void => {
      out.bytes -= n;
      this.outboundTotal -= n;
      if (--left === 0 && large) out.large--;
      if (out.bytes <= 0 && out.large <= 0 && this.outbound.get(to) === out) this.outbound.delete(to);
    };
    if (!large) {
      const p = { inFlight: true, at: performance.now() };
      this.probes.set(to, p);
      this.call(addr, 'dm', { ...head, m: bytes }, id, () => {
        p.inFlight = false;
        settled(bytes.length);
      });
      return;
    }
    const mid = ++this.msgId;
    this.stats.chunksOut += chunks.length;
    chunks.forEach((part, x) => this.call(addr, 'dm', { ...head, m: part, c: [mid, x, chunks.length] }, id, () => settled(part.length)));
  }

  /** Per peer: the last small batch sent as a call (the link's liveness probe), and whether it is unanswered. */
  private readonly probes = new Map<string, { inFlight: boolean; at: number }>();

  private probeDue(to: string): boolean {
    const p = this.probes.get(to);
    return p === undefined || (!p.inFlight && performance.now() - p.at >= probeEveryMs);
  }

  /**
   * Whether `bytes` more would take what this node holds for all peers past outboundBytesMax: per peer the larger
   * of its unanswered calls' bytes and its socket's unsent bytes (an unanswered call still in its socket counts
   * once), summed. The sum is walked only when the quick upper bound (both counted in full) is past the budget.
   */
  private overTotal(bytes: number): boolean {
    if (this.outboundTotal + (this.c.peers.queuedBytesTotal?.() ?? 0) + bytes <= outboundBytesMax) return false;
    let total = 0;
    for (const [name, addr] of this.addrs) total += Math.max(this.outbound.get(name)?.bytes ?? 0, this.c.peers.queuedBytes?.(addr) ?? 0);
    for (const [name, o] of this.outbound) if (!this.addrs.has(name)) total += o.bytes;
    return total + bytes > outboundBytesMax;
  }

  /** Per peer: bytes of data messages sent and not yet answered, and large (chunked) messages among them. */
  private readonly outbound = new Map<string, { bytes: number; large: number }>();
  private outboundTotal = 0;

  private call(addr: string, op: string, args: Record<string, unknown>, id: bigint, done: () => void): void {
    this.c.peers.call(addr, op, args, peerCallTimeoutMs, id).then(done, (err: unknown) => {
      done();
      this.c.logger.debug({ to: addr, err: (err as Error).message }, 'data message not delivered');
    });
  }

  /** A data message from an attested peer (`dm`). Its sender is the session's attested key. */
  onPeerMessage(req: Record<string, unknown>, peerKey: Buffer): RpcResult {
    const id = nodeIdFromPublicKey(peerKey);
    const name = nodeName(id);
    const inc = req.inc;
    if (typeof inc !== 'number' || !Number.isSafeInteger(inc) || inc < 0) throw new EkvError('BAD_REQUEST', 'bad incarnation');
    const pos = req.p;
    if (typeof pos !== 'number' || !Number.isSafeInteger(pos) || pos < -1) throw new EkvError('BAD_REQUEST', 'bad log position');
    // Boot ids (docs/consistency.md, "Boots and clones"): required, so that no peer is admitted without one.
    const boot = req.b;
    if (typeof boot !== 'number' || !Number.isSafeInteger(boot) || boot < 1 || boot > bootIdMax) throw new EkvError('BAD_REQUEST', 'bad boot id');
    const toBoot = req.tb === undefined ? 0 : req.tb;
    if (typeof toBoot !== 'number' || !Number.isSafeInteger(toBoot) || toBoot < 0 || toBoot > bootIdMax) throw new EkvError('BAD_REQUEST', 'bad boot id');
    const toInc = req.ti === undefined ? -1 : req.ti;
    if (typeof toInc !== 'number' || !Number.isSafeInteger(toInc) || toInc < -1) throw new EkvError('BAD_REQUEST', 'bad incarnation');
    const addr = typeof req.a === 'string' && req.a.length > 0 && req.a.length <= 300 ? req.a : null;
    if (!(req.m instanceof Uint8Array)) throw new EkvError('BAD_REQUEST', 'data message without bytes');
    let bytes: Buffer | null = Buffer.from(req.m.buffer, req.m.byteOffset, req.m.length);
    if (req.c !== undefined) {
      const c = req.c;
      if (!Array.isArray(c) || c.length !== 3) throw new EkvError('BAD_REQUEST', 'bad chunk header');
      bytes = this.reassembly.add(name, c[0] as number, c[1] as number, c[2] as number, bytes);
      if (bytes === null) return {};
    }
    const bodies = decodePeerBatch(bytes, this.cfg.shards);
    this.learn(name, id, addr);
    this.stats.peerMessagesIn += bodies.length;
    // The whole batch in one step of the driver: its records go to the log as one append, its answers together.
    this.driver.deliverAll(bodies.map((body) => ({ kind: 'peer', from: { name, ring: id, inc }, body, pos, boot, toBoot, toInc })));
    return {};
  }

  // ---- client operations ----

  /** The range of a key (latin1 string, as the core keeps keys). */
  shardOfKey(key: Buffer): number {
    return shardOf(key.toString('latin1'), this.cfg.shards);
  }

  private shardOfOp(op: ClientOp): number {
    return op.kind === 'open' ? op.shard : shardOf(op.key, this.cfg.shards);
  }

  /** The owner the local configuration names for a range (null: none known). */
  private ownerName(shard: number): string | null {
    return this.driver.node?.configOf(shard)?.members[0]?.name ?? null;
  }

  /**
   * Runs `op` at its range's owner: here, or forwarded (following NOT_OWNER hints), retrying what is retryable
   * until the deadline. The last retryable answer is returned when time runs out (the SDK retries further).
   */
  async run(op: ClientOp, deadlineMs = clientOpDeadlineMs): Promise<ClientResult> {
    const shard = this.shardOfOp(op);
    const deadline = Date.now() + deadlineMs;
    let last: ClientResult = { ok: false, code: 'UNAVAILABLE' };
    // Set once an attempt of a write was handed to a core (here, or sent to another node): from then on the
    // write may have been applied, and a later "not applied" answer (SESSION_EXPIRED: the session was evicted
    // meanwhile) says nothing about the earlier attempt, so it is reported as OUTCOME_UNKNOWN.
    const reached = { maybe: false };
    const settle = (r: ClientResult): ClientResult =>
      reached.maybe && op.kind !== 'get' && op.kind !== 'open' && !r.ok && r.code === 'SESSION_EXPIRED' ? { ok: false, code: 'OUTCOME_UNKNOWN' } : r;
    for (let attempt = 0; ; attempt++) {
      let target = this.ownerName(shard);
      for (let hop = 0; hop <= forwardHopsMax; hop++) {
        const mayHaveReached = reached.maybe;
        const r = target === null || target === this.selfMember.name || this.driver.node?.isActiveOwner(shard) ? await this.local(op, reached) : await this.forward(target, op, reached);
        if (r.ok || !retryable(r.code)) return mayHaveReached ? settle(r) : r;
        // An open carries no request id: once one may have reached an owner, a retry here could open a second
        // session (bounded by the principal's own session bound); the SDK retries instead, once.
        if (op.kind === 'open' && reached.maybe && r.code === 'UNAVAILABLE') return r;
        last = r;
        if (r.code !== 'NOT_OWNER' || r.hint === null || r.hint === target) break;
        target = r.hint;
      }
      if (Date.now() + 50 >= deadline) return last;
      await sleep(Math.min(25 * 2 ** attempt, 400, Math.max(0, deadline - Date.now())));
    }
  }

  private async forward(name: string, op: ClientOp, reached: { maybe: boolean } = { maybe: false }): Promise<ClientResult> {
    const addr = this.addrs.get(name);
    const id = nameToId(name);
    if (!addr || id === null) return { ok: false, code: 'UNAVAILABLE' };
    this.stats.forwards++;
    try {
      reached.maybe = true; // sent: whatever comes back (or not), the owner may have applied it
      const r = await this.c.peers.call(addr, 'fwd', encodeForward(op), peerCallTimeoutMs, id);
      return wireResult(r.r);
    } catch (err) {
      if (err instanceof EkvError && !retryable(err.code)) throw err;
      return { ok: false, code: 'UNAVAILABLE' };
    }
  }

  /** `op` at this node's core (an owner's answer, or NOT_OWNER with a hint). */
  async local(op: ClientOp, reached: { maybe: boolean } = { maybe: false }): Promise<ClientResult> {
    if (!this.driver.serving) return { ok: false, code: 'UNAVAILABLE' };
    if (op.kind !== 'get') {
      // An acknowledged write has R copies: a range not yet configured with R members takes none.
      const c = this.driver.node?.configOf(this.shardOfOp(op));
      if (c && c.members.length < this.c.minMembers && this.driver.node?.isActiveOwner(this.shardOfOp(op))) return { ok: false, code: 'UNAVAILABLE' };
    }
    const rid = ++this.rid;
    return new Promise<ClientResult>((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(rid);
        resolve({ ok: false, code: 'UNAVAILABLE' });
      }, localAttemptMs);
      timer.unref();
      this.waiting.set(rid, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      reached.maybe = true;
      this.driver.deliver({ kind: 'client', client: 'local', rid, op });
      // Dropped (the driver failed closed meanwhile): answer now rather than at the timeout.
      if (!this.driver.serving && this.waiting.has(rid)) {
        this.waiting.delete(rid);
        clearTimeout(timer);
        resolve({ ok: false, code: 'UNAVAILABLE' });
      }
    });
  }

  // ---- the access module's documents (reserved keys), at their owner only ----

  /** The enclave's monotonic clock in core ticks, read now. */
  private nowTicks(): number {
    return Math.floor(performance.now() / dataTickMs);
  }

  /**
   * This node is the active owner of the key's range with a read lease valid now (it may order the key's writes
   * and serve it). Checked at every use: an owner cut off from its members loses its lease on its own clock.
   */
  owns(key: Buffer): boolean {
    return this.driver.node?.isLeasedOwner(this.shardOfKey(key), this.nowTicks()) ?? false;
  }

  get serving(): boolean {
    return this.driver.serving;
  }

  /** The key's acknowledged value at its active owner (this node); throws UNAVAILABLE elsewhere. */
  readOwned(key: Buffer): Buffer | null {
    // Review-12 F1: the core's state includes writes whose record is not durable yet (a single-member range commits
    // in memory at once); what is read here is never one a crash could lose. A document key (reserved: no client
    // writes it) changes here only through putOwned, so only a document write still in flight (its put unanswered,
    // or answered without its records durable) makes a read wait; writes to other keys of the range do not.
    if (this.docWritesInFlight.has(key.toString('latin1'))) throw new EkvError('UNAVAILABLE', 'the document is being written');
    const e = this.driver.node?.ownedEntry(key.toString('latin1'), this.nowTicks());
    if (e === null || e === undefined) {
      if (e === null || !this.driver.node) throw new EkvError('UNAVAILABLE', 'not the owner of this key');
      return null;
    }
    return e.value === null ? null : Buffer.from(e.value, 'latin1');
  }

  /** The owner the local configuration names for the key's range, with an address to reach it. */
  ownerOf(key: Buffer): NodeRef | null {
    const name = this.ownerName(this.shardOfKey(key));
    if (name === null) return null;
    if (name === this.selfMember.name) return this.self;
    const addr = this.addrs.get(name);
    const id = nameToId(name);
    return addr && id !== null ? { id, addr } : null;
  }

  /**
   * Called when this node starts or stops owning a range with a valid lease (the access module forgets the
   * documents it cached and waits out its takeover time). A lease that lapses and comes back counts as both.
   */
  onOwnershipGained(fn: () => void): void {
    this.ownershipListeners.push(fn);
  }

  private watchOwnership(): void {
    const n = this.driver.node;
    if (!n) return;
    const now = this.nowTicks();
    let sig = '';
    for (let s = 0; s < this.cfg.shards; s++) sig += n.isLeasedOwner(s, now) ? `${s}@${n.configOf(s)?.epoch},` : '';
    if (sig === this.activeSig) return;
    this.activeSig = sig;
    for (const fn of this.ownershipListeners) fn();
  }

  /**
   * Stores `bytes` under a reserved key, here as the active owner only (no forwarding): the access module's
   * document owner orders the changes itself. Runs in a session of this node's own, one write per range at a time.
   */
  /** Document keys with a putOwned in flight (count per key): readOwned answers UNAVAILABLE for them. */
  private readonly docWritesInFlight = new Map<string, number>();

  async putOwned(key: Buffer, bytes: Buffer): Promise<void> {
    const k = key.toString('latin1');
    this.docWritesInFlight.set(k, (this.docWritesInFlight.get(k) ?? 0) + 1);
    try {
      await this.putOwnedNow(key, bytes);
    } finally {
      // Answered or not (an unknown outcome may still be applied), what the range holds now is durable before the
      // document is read again here, or the core was rebuilt from what is durable.
      const mark = this.driver.readMark(this.shardOfKey(key));
      if (mark !== null) await this.driver.untilDurable(mark, 64);
      const n = (this.docWritesInFlight.get(k) ?? 1) - 1;
      if (n <= 0) this.docWritesInFlight.delete(k);
      else this.docWritesInFlight.set(k, n);
    }
  }

  private async putOwnedNow(key: Buffer, bytes: Buffer): Promise<void> {
    const shard = this.shardOfKey(key);
    const st = this.internal.get(shard) ?? { session: 0, seq: 0, lock: Promise.resolve() };
    this.internal.set(shard, st);
    const run = st.lock.then(async () => {
      for (let attempt = 0; attempt < 2; attempt++) {
        if (!this.owns(key)) throw new EkvError('UNAVAILABLE', 'not the owner of this document (the ring is changing)');
        if (st.session === 0) {
          const o = await this.local({ kind: 'open', shard, principal: this.internalTag });
          if (!o.ok || o.kind !== 'open') throw new EkvError('UNAVAILABLE', 'cannot open a session');
          st.session = o.session;
          st.seq = 0;
        }
        const seq = ++st.seq;
        const r = await this.local({ kind: 'put', key: key.toString('latin1'), value: bytes.toString('latin1'), ifVersion: null, session: st.session, seq, floor: seq, principal: this.internalTag });
        if (r.ok) return;
        if (r.code === 'SESSION_EXPIRED' && attempt === 0) {
          st.session = 0; // a first attempt in an unknown session was not applied: open another
          continue;
        }
        throw toEkvError(r);
      }
    });
    st.lock = run.catch(() => undefined);
    await run;
  }

  // ---- scans and batches (enclave/cluster/scan-ops.ts) ----

  /**
   * A range's acknowledged view, here, now, if this node is its active owner with a read lease valid now and its
   * log works (the condition a get is served under); null otherwise. Used synchronously and not kept.
   */
  scanView(shard: number): { view: ScanView; mark: ReadMark } | null {
    if (!this.driver.serving) return null;
    const mark = this.driver.readMark(shard);
    const view = this.driver.node?.scanView(shard, this.nowTicks()) ?? null;
    return view === null || mark === null ? null : { view, mark };
  }

  /**
   * Review-12 F1 (R1 for scans): a page read from a view is answered only once what the view held at the time is
   * durable (false: the core was rebuilt meanwhile, or the log is not getting there: answer UNAVAILABLE).
   */
  viewDurable(mark: ReadMark): Promise<boolean> {
    return this.driver.untilDurable(mark);
  }

  /**
   * Whether an entry's deadline has passed on this node's clock now (docs/consistency.md "Expiry"): scans skip it,
   * as a get would not return it (a get waits for the replicated tombstone instead).
   */
  expiredNow(e: Entry): boolean {
    return expiredHere(e, this.nowTicks());
  }

  /** The enclave's monotonic clock in core ticks, read now (what scanView and expiry deadlines are measured in). */
  clockTicks(): number {
    return this.nowTicks();
  }

  /** Whether this node's core is the active owner of a range (leased or not: a scan waits for the lease here). */
  activeOwner(shard: number): boolean {
    return this.driver.node?.isActiveOwner(shard) ?? false;
  }

  /** The owner the local configuration names for a range, with where to reach it (null: none, or this node). */
  ownerRefOfShard(shard: number): { name: string; ref: NodeRef | null } | null {
    const name = this.ownerName(shard);
    if (name === null) return null;
    if (name === this.selfMember.name) return { name, ref: this.self };
    return { name, ref: this.refOfName(name) };
  }

  /** A peer by member name, with an address to reach it (null: unknown). */
  refOfName(name: string): NodeRef | null {
    const addr = this.addrs.get(name);
    const id = nameToId(name);
    return addr && id !== null ? { id, addr } : null;
  }

  /** An operation at another enclave of this ring, pinned to its ring id. */
  async callPeer(ref: NodeRef, op: string, args: Record<string, unknown>): Promise<RpcResult> {
    this.stats.forwards++;
    return this.c.peers.call(ref.addr, op, args, peerCallTimeoutMs, ref.id);
  }

  // ---- status ----

  /**
   * Ready for clients: the data log works, every range has a configuration with enough members that is the
   * placement this node's view of the ring wants, and every range this node's configuration names it owner
   * of is active here. (A ring whose nodes all say so has converged: no range is about to move.)
   */
  get ready(): boolean {
    const n = this.driver.node;
    if (!n || n.hasRetired) return false; // a retired node serves nothing, whatever its last view of the ranges
    for (let s = 0; s < this.cfg.shards; s++) if (this.unready(n, s)) return false;
    return true;
  }

  private unready(n: NonNullable<DataDriver['node']>, s: number): boolean {
    const c = n.configOf(s);
    if (!c || c.members.length < this.c.minMembers) return true;
    if (c.members[0]?.name === this.selfMember.name && !n.isActiveOwner(s)) return true;
    return !n.placementSettled(s);
  }

  /**
   * The data layer's gauges and counters for the metrics registry (enclave/node-metrics.ts): per range (by range
   * number, a fixed slice of the hash space) its epoch and this node's lease; counts of ranges owned, leased and
   * held; ranges this node owns with fewer than R members, or with a member it has not heard from lately;
   * entries on their way to members (syncs of an activation, installs of a proposal); values waiting to expire;
   * the cores' counters. Nothing names a key, a value or a principal.
   */
  metrics(): DataMetrics | null {
    const n = this.driver.node;
    if (!n) return null;
    const now = this.nowTicks();
    const live = new Set(n.livePeers());
    live.add(this.selfMember.name);
    const out: DataMetrics = {
      ranges: [], owned: 0, leased: 0, member: 0, underReplicated: 0, backlog: 0, expiring: 0, leaseMinSeconds: null, epochMax: 0,
      expiredCollected: this.driver.counters.expiredCollected, resends: this.driver.counters.resends, fenced: this.driver.counters.fenced,
      dropped: this.stats.outboundDropped + this.stats.undeliverable,
    };
    for (let s = 0; s < this.cfg.shards; s++) {
      const r = n.rangeState(s, now);
      if (r.epoch === 0) continue;
      const leaseSeconds = r.active ? (r.leaseLeft < 0 ? null : (r.leaseLeft * dataTickMs) / 1000) : null;
      out.ranges.push({ range: s, epoch: r.epoch, members: r.members, role: r.active ? 'owner' : r.member ? 'member' : 'none', leaseSeconds });
      if (r.member) {
        out.member++;
        out.expiring += n.rangeExpiring(s);
      }
      if (r.active) {
        out.owned++;
        out.epochMax = Math.max(out.epochMax, r.epoch);
        if (leaseSeconds !== null) out.leaseMinSeconds = Math.min(out.leaseMinSeconds ?? Infinity, leaseSeconds);
      }
      if (r.leased) out.leased++;
      if (r.owner && (r.members < this.c.minMembers || r.memberNames.some((m) => !live.has(m)))) out.underReplicated++;
      if (r.moving) out.backlog += n.rangeKeys(s);
    }
    return out;
  }

  /**
   * Review-15 F1: this core runs as a member whose state is proven (not still checking it after a start, not
   * replaced by another boot, not retired): only then may the node vouch, by `rcvAlive`, that its ring is alive.
   */
  get provenMember(): boolean {
    const n = this.driver.node;
    return n !== null && n !== undefined && !n.checkingState && !n.superseded && !n.hasRetired;
  }

  status(): RpcResult {
    const n = this.driver.node;
    let owned = 0;
    let member = 0;
    let keys = 0;
    let bytes = 0;
    let epochMax = 0;
    if (n) {
      for (let s = 0; s < this.cfg.shards; s++) {
        const c = n.configOf(s);
        epochMax = Math.max(epochMax, c?.epoch ?? 0);
        if (c?.members.some((m) => m.name === this.selfMember.name)) {
          member++;
          keys += n.rangeKeys(s);
          bytes += n.rangeBytes(s);
        }
        if (n.isActiveOwner(s)) owned++;
      }
    }
    // For operators: why this node is not ready (its first two ranges that lack members or an active owner here).
    const waiting: string[] = [];
    if (n) {
      for (let s = 0; s < this.cfg.shards && waiting.length < 2; s++) if (this.unready(n, s)) waiting.push(n.describeRange(s));
    }
    return {
      serving: this.ready,
      waiting,
      durable: this.driver.serving,
      ranges: this.cfg.shards,
      rangesOwned: owned,
      rangesMember: member,
      epochMax,
      /** Keys with a value in the ranges this node holds as a member (its copies). */
      keys,
      bytes,
      livePeers: n ? n.livePeers().length : 0,
      /** This node's incarnation as a data-core member (it grows when the node finds it was rolled back or cloned). */
      incarnation: n ? n.self.inc : null,
      /** This core's boot id, and whether it is still checking its state or was replaced by another boot (fenced). */
      boot: n ? n.boot : null,
      position: n ? n.position : null,
      checking: n ? n.checkingState : null,
      superseded: n ? n.superseded : null,
      /** Decommissioned: this member retired for good (docs/consistency.md "Retirement"); it serves nothing again. */
      retired: n ? n.hasRetired : null,
      ...this.stats,
    };
  }

  /** One step of an iterative lookup: this node if it owns the key's range, else the owner its configuration names. */
  routeStep(key: Buffer): RpcResult {
    if (this.owns(key)) return { r: 'owner' };
    const o = this.ownerOf(key);
    if (!o || o.id === this.self.id) throw new EkvError('UNAVAILABLE', 'no owner known for this key (the ranges are moving)');
    return { r: 'next', id: idToBytes(o.id), addr: o.addr };
  }

  /** For tests: the core's whole durable state. */
  durableRecords(): LogRecord[] {
    return this.driver.node?.durableRecords() ?? [];
  }
}

/** A refusal as the client sees it (a retryable one becomes UNAVAILABLE: the outcome of a write is unknown). */
export function toEkvError(r: Extract<ClientResult, { ok: false }>): EkvError {
  switch (r.code) {
    case 'CONFLICT':
      return new EkvError('CONFLICT', `the key's version is ${r.version}`, { version: r.version, ...(r.t === undefined || r.t < 0 ? {} : { absentAt: r.t }) });
    case 'RANGE_FULL':
      return new EkvError('VALUE_TOO_LARGE', `RANGE_FULL: the key's range would exceed ${rangeBytesMax} bytes`);
    case 'SESSION_EXPIRED':
      // The one "not applied" answer: no attempt of this request by the node that took it may have reached an owner.
      return new EkvError('EXPIRED', 'SESSION_EXPIRED: the write session is no longer known; this request was not applied (open a new session)');
    case 'OUTCOME_UNKNOWN':
      return new EkvError('EXPIRED', 'OUTCOME_UNKNOWN: the write session expired after an attempt that may have been applied');
    case 'STALE_REQUEST':
      return new EkvError('EXPIRED', 'STALE_REQUEST: a request below the session floor (outcome unknown)');
    case 'BAD_REQUEST':
      return new EkvError('BAD_REQUEST', 'the range refused the request (unknown session, or outside its window)');
    case 'BUSY':
      // Retried like UNAVAILABLE (by the entry node until its deadline, then by the SDK): this attempt was not
      // queued, and the request id makes a retry apply once. An earlier attempt may still be waiting, so to the
      // caller the outcome stays unknown, as for UNAVAILABLE.
      return new EkvError('UNAVAILABLE', 'BUSY: this principal already has its share of the range\'s write queue waiting; this attempt was not queued (retry)', { reason: 'BUSY' });
    case 'NOT_OWNER':
    case 'UNAVAILABLE':
      return new EkvError('UNAVAILABLE', 'the key\'s range has no serving owner right now');
  }
}

/** A client's answer (the RPC result of get/put/del/open). */
export function toRpcResult(r: ClientResult, opKind: ClientOp['kind'], shard: number, shards: number, windowMax: number): RpcResult {
  if (!r.ok) throw toEkvError(r);
  switch (r.kind) {
    case 'get':
      // The version of the key's delete (its tombstone's; 0: never written) goes with NOT_FOUND, so that a client
      // that saw a newer version can tell a rolled-back "no value" from a delete (client/floor.ts).
      if (!r.found || r.value === null) throw new EkvError('NOT_FOUND', 'no such key', { version: r.version });
      return { v: Buffer.from(r.value, 'latin1'), n: r.version };
    case 'write':
      // A delete of a key without a value says version 0 (there was nothing to delete), and in `t` the version of
      // the key's delete (0: never written), which the client's floor checks as a read of "no value".
      return opKind === 'del' ? (r.existed ? { n: r.version, d: true } : { n: 0, d: false, t: r.version }) : { n: r.version };
    case 'open':
      return { s: r.session, sh: shard, S: shards, w: windowMax };
  }
}
