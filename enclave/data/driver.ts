// DataDriver: the thin, impure shell around DataNode (the start of wiring the core into the enclave; not
// used by enclave/cluster/store.ts yet). It owns the three things the core must not: the clock, the sealed
// log and the transport. Its one rule is raft's: a batch's records are durable before any of its messages
// leave, and batches leave in order. A failed append fails the node closed: that batch and every later one
// are dropped unsent, the core is discarded, and a new one is built from what the log holds, retrying until
// the log can be read again (it recovers by itself when the disk works again).
import { type DataConfig } from './config.ts';
import { type DataCounters, DataNode, newDataCounters } from './node.ts';
import type { Config, Inbound, LogRecord, Member, Outbound } from './types.ts';

export interface DataLog {
  /**
   * Appends and flushes; resolves only once the records are durable (sealed, fsynced). Called synchronously, in
   * batch order, right after the core made the records: the log's order is the core's.
   */
  append(records: readonly LogRecord[]): Promise<void>;
  /** Every durable record, in order (a torn tail already cut off). */
  load(): Promise<LogRecord[]>;
  /**
   * Optional compaction: asked right after each append; when it says yes, `snapshot` gets the core's whole durable
   * state as records (DataNode.durableRecords), which is then exactly the state of every record appended so far.
   */
  wantsSnapshot?(): boolean;
  snapshot?(records: LogRecord[]): void;
  /**
   * Optional recovery after a failed append, instead of `load`: make `records` (the failed core's whole durable
   * state, including what the failed appends held) the log's durable content, replacing the log. Rejects while
   * the disk still fails. Sound because the failed batches' messages were never sent: their records becoming
   * durable now is the same as a flush followed by the loss of those messages, which the protocol tolerates.
   */
  recover?(records: LogRecord[]): Promise<void>;
}

export interface DataDriverInit {
  self: Member;
  config: DataConfig;
  peers: ReadonlyArray<{ name: string; ring: bigint }>;
  genesis?: readonly Config[];
  log: DataLog;
  send: (m: Outbound) => void;
  /** The enclave's monotonic clock, in ticks (never wall-clock time, never the host's). */
  clock: () => number;
  rand: () => number;
  /**
   * A fresh boot id for each core it builds (a rebuilt core is a new boot), from the enclave's own randomness
   * (docs/consistency.md, "Boots and clones"). Default: drawn from `rand`.
   */
  bootId?: () => number;
  /** Timers, injected so tests can drive them. */
  every: (ms: number, fn: () => void) => { stop(): void };
  after: (ms: number, fn: () => void) => void;
  tickMs: number;
  reloadMs: number;
  onFailClosed?: (err: unknown) => void;
  /** Test seam only: DataNodeInit.seizeAll on the first start. */
  seizeAll?: boolean;
  /** Called when a core was rebuilt after failing closed (the log works again). */
  onRecovered?: () => void;
  /** The core's debug lines (ownership changes). */
  debug?: (line: string) => void;
}

/** A read's dependency (DataDriver.readMark): the core it read and the position it needs durable. */
export interface ReadMark {
  readonly core: DataNode;
  readonly pos: number;
}

export class DataDriver {
  /** The cores' counters, kept across rebuilds (metrics). */
  readonly counters: DataCounters = newDataCounters();
  private readonly init: DataDriverInit;
  private core: DataNode | null = null;
  /** Bumps when a core is discarded: work queued for an older core is dropped. */
  private generation = 0;
  private chain: Promise<void> = Promise.resolve();
  /** The log position durable so far in this core (R1: a get's answer leaves once its `dep` is at or below it). */
  private durablePos = 0;
  private timer: { stop(): void } | null = null;
  private stopped = false;

  /** Every peer the directory has named, so that a rebuilt core starts with them too. */
  private readonly directory = new Map<string, bigint>();

  constructor(init: DataDriverInit) {
    this.init = init;
    for (const p of init.peers) this.directory.set(p.name, p.ring);
  }

  /** A node the directory learnt of (never trusted for safety: it only says whom to heartbeat). */
  addPeer(name: string, ring: bigint): void {
    if (this.directory.has(name)) return;
    this.directory.set(name, ring);
    this.core?.addPeer(name, ring);
  }

  async start(): Promise<void> {
    await this.rebuild();
    this.timer = this.init.every(this.init.tickMs, () => this.onTick());
  }

  stop(): void {
    this.stopped = true;
    this.timer?.stop();
    this.generation++;
    this.core = null;
  }

  /** A peer message or a client request, already authenticated and decoded. Dropped while failed closed. */
  deliver(m: Inbound): void {
    if (!this.core) return;
    this.core.step(m, this.init.clock());
    // One pump for the requests stepped in this microtask turn (a client frame carries many): their records go
    // to the log in one append, their answers out together. The core's order is kept: ready() drains it all.
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(() => this.pumpQueuedNow());
  }

  private pumpQueuedNow(): void {
    if (!this.pumpQueued) return;
    this.pumpQueued = false;
    this.pump();
  }

  private pumpQueued = false;

  /** Several inbound messages (one peer batch), then one pump: their records are persisted together. */
  deliverAll(ms: readonly Inbound[]): void {
    if (!this.core) return;
    const now = this.init.clock();
    for (const m of ms) this.core.step(m, now);
    this.pump();
  }

  /** Graceful leave: the core stops owning and tells its peers; its ranges move away by reconfiguration. */
  leave(): void {
    if (!this.core) return;
    this.core.leave();
    this.pump();
  }

  /** Retire this incarnation for good (docs/consistency.md, "Retirement", B7); false if the core refuses (B7d). */
  retire(): boolean {
    if (!this.core) return false;
    const ok = this.core.retire();
    this.pump();
    return ok;
  }

  get serving(): boolean {
    return this.core !== null;
  }

  /** The core, for status pages and tests (null while failed closed). */
  get node(): DataNode | null {
    return this.core;
  }

  /**
   * What a read of the range's state made now depends on (R1 outside `step`): this core and the position of the
   * newest record the state as shown holds. Null while failed closed.
   */
  readMark(shard: number): ReadMark | null {
    const core = this.core;
    return core === null ? null : { core, pos: core.readDependency(shard) };
  }

  /**
   * Resolves true once every record up to `mark.pos` of the core the mark was taken from is durable; false when
   * that core was replaced meanwhile (a failed append rebuilds it from what is durable: what was read may be
   * gone) or after `rounds` rounds of the log (each: every batch handed to it so far handled). The position is
   * fixed, so a steady stream of later writes does not hold it back.
   */
  async untilDurable(mark: ReadMark, rounds = 8): Promise<boolean> {
    for (let i = 0; i < rounds; i++) {
      if (this.core !== mark.core) return false;
      if (mark.pos <= this.durablePos) return true;
      await this.idle();
    }
    return this.core === mark.core && mark.pos <= this.durablePos;
  }

  /** Resolves when every batch handed to the log so far has been handled. */
  idle(): Promise<void> {
    this.pumpQueuedNow(); // what was delivered is handed to the log first
    return this.chain;
  }

  private onTick(): void {
    if (!this.core) return;
    this.core.tick(this.init.clock());
    this.pump();
  }

  private pump(): void {
    const core = this.core;
    if (!core) return;
    const rd = core.ready();
    if (rd.persist.length === 0 && rd.messages.length === 0) return;
    const gen = this.generation;
    const log = this.init.log;
    // R1: a get's answer whose records are durable already leaves now, not behind this batch and the ones before.
    let messages = rd.messages;
    if (messages.some((m) => m.kind === 'reply' && m.dep !== undefined && m.dep <= this.durablePos)) {
      messages = [];
      for (const m of rd.messages) {
        if (m.kind === 'reply' && m.dep !== undefined && m.dep <= this.durablePos) this.init.send(m);
        else messages.push(m);
      }
      if (rd.persist.length === 0 && messages.length === 0) return;
    }
    // Appended now, in the core's order (so a snapshot taken here is exactly the state of what was appended).
    const durable = rd.persist.length > 0 ? log.append(rd.persist) : null;
    durable?.catch(() => undefined); // handled in the chain below
    if (durable && log.wantsSnapshot?.() && log.snapshot) log.snapshot(core.durableRecords());
    this.chain = this.chain.then(async () => {
      if (gen !== this.generation) return;
      try {
        if (durable) await durable;
      } catch (err) {
        if (gen === this.generation) this.failClosed(err, core);
        return;
      }
      if (gen !== this.generation) return;
      this.durablePos = Math.max(this.durablePos, rd.pos);
      for (const m of messages) this.init.send(m);
    });
  }

  private failClosed(err: unknown, failed: DataNode | null, kept: LogRecord[] | null = null): void {
    this.generation++;
    this.core = null;
    this.init.onFailClosed?.(err);
    // The failed core's durable state (what its appends held, durable or not), for a log that can be resealed.
    const state = kept ?? (failed && this.init.log.recover ? failed.durableRecords() : null);
    this.init.after(this.init.reloadMs, () => void this.rebuild(state).catch((e: unknown) => this.failClosed(e, null, state)));
  }

  private async rebuild(state: LogRecord[] | null = null): Promise<void> {
    if (this.stopped) return;
    let log: LogRecord[];
    const recovering = this.generation > 0;
    if (state && this.init.log.recover) {
      await this.init.log.recover(state);
      log = state;
    } else {
      log = await this.init.log.load();
    }
    if (this.stopped) return;
    const i = this.init;
    this.core = new DataNode({
      self: i.self, config: i.config, rand: i.rand, peers: [...this.directory].map(([name, ring]) => ({ name, ring })), log, now: i.clock(),
      counters: this.counters,
      // Genesis only on the very first start: a core rebuilt after a failure never founds anything.
      ...(log.length === 0 && i.genesis && !recovering ? { genesis: i.genesis } : {}),
      ...(i.debug ? { debug: i.debug } : {}),
      ...(i.bootId ? { boot: i.bootId() } : {}),
      ...(i.seizeAll && !recovering ? { seizeAll: true } : {}),
    });
    if (recovering) i.onRecovered?.();
    // Everything the new core was built from is durable; what its constructor recorded (genesis) is not yet.
    this.durablePos = this.core.loadedPosition;
    this.pump();
  }
}
