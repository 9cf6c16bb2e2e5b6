// DataDriver: the thin, impure shell around DataNode (the start of wiring the core into the enclave; not
// used by enclave/cluster/store.ts yet). It owns the three things the core must not: the clock, the sealed
// log and the transport. Its one rule is raft's: a batch's records are durable before any of its messages
// leave, and batches leave in order. A failed append fails the node closed: that batch and every later one
// are dropped unsent, the core is discarded, and a new one is built from what the log holds, retrying until
// the log can be read again (it recovers by itself when the disk works again).
import { type DataConfig } from './config.ts';
import { DataNode } from './node.ts';
import type { Config, Inbound, LogRecord, Member, Outbound } from './types.ts';

export interface DataLog {
  /** Appends and flushes; resolves only once the records are durable (sealed, fsynced). */
  append(records: readonly LogRecord[]): Promise<void>;
  /** Every durable record, in order (a torn tail already cut off). */
  load(): Promise<LogRecord[]>;
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
  /** Timers, injected so tests can drive them. */
  every: (ms: number, fn: () => void) => { stop(): void };
  after: (ms: number, fn: () => void) => void;
  tickMs: number;
  reloadMs: number;
  onFailClosed?: (err: unknown) => void;
}

export class DataDriver {
  private readonly init: DataDriverInit;
  private core: DataNode | null = null;
  /** Bumps when a core is discarded: work queued for an older core is dropped. */
  private generation = 0;
  private chain: Promise<void> = Promise.resolve();
  private timer: { stop(): void } | null = null;
  private stopped = false;

  constructor(init: DataDriverInit) {
    this.init = init;
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
    this.pump();
  }

  get serving(): boolean {
    return this.core !== null;
  }

  /** The core, for status pages and tests (null while failed closed). */
  get node(): DataNode | null {
    return this.core;
  }

  /** Resolves when every batch handed to the log so far has been handled. */
  idle(): Promise<void> {
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
    this.chain = this.chain.then(async () => {
      if (gen !== this.generation) return;
      try {
        if (rd.persist.length > 0) await this.init.log.append(rd.persist);
      } catch (err) {
        if (gen === this.generation) this.failClosed(err);
        return;
      }
      if (gen !== this.generation) return;
      for (const m of rd.messages) this.init.send(m);
    });
  }

  private failClosed(err: unknown): void {
    this.generation++;
    this.core = null;
    this.init.onFailClosed?.(err);
    this.init.after(this.init.reloadMs, () => void this.rebuild().catch(() => this.failClosed(new Error('log unreadable'))));
  }

  private async rebuild(): Promise<void> {
    if (this.stopped) return;
    const log = await this.init.log.load();
    if (this.stopped) return;
    const i = this.init;
    this.core = new DataNode({
      self: i.self, config: i.config, rand: i.rand, peers: i.peers, log, now: i.clock(),
      ...(log.length === 0 && i.genesis ? { genesis: i.genesis } : {}),
    });
    this.pump();
  }
}
