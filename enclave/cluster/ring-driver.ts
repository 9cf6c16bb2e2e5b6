/**
 * Drives the pure ring core inside the enclave: a timer turns into tick(),
 * peer messages into step(), and whatever the core queues is sent through the
 * peer pool. Lookups become promises; ring events go to the data layer.
 */
import type { Logger } from 'pino';
import { EkvError } from '../../protocol/errors.ts';
import {
  RingNode, defaultRingConfig, validateConfig, nodeIdFromPublicKey, type NodeRef, type RingConfig, type RingEvent, type RingMessage,
} from '../ring/index.ts';
import { encodeRingValue } from './codec.ts';
import type { PeerPool } from './peers.ts';

export const tickMs = 50;
export const ringConfig: RingConfig = validateConfig({
  ...defaultRingConfig,
  successorsMax: 8,
  fingerBits: 256,
  stabilizeTicks: 6, // 300 ms
  fixFingersTicks: 2, // 100 ms while the ring changes (joins, failures: fingers found different)
  // 1.5 s once a whole round of the finger table changed nothing (issue 15: a settled ring fixed a finger every
  // 100 ms for nothing). Fingers are a routing shortcut; successor lists give correctness (enclave/ring/config.ts).
  fixFingersIdleTicks: 30,
  checkPredecessorTicks: 10,
  rpcTimeoutTicks: 20, // 1 s: a first contact includes two attested handshakes
  lookupTimeoutTicks: 80,
  joinRetryTicks: 20,
});
const peerMessageTimeoutMs = 2000;

export interface LookupResult {
  owner: NodeRef;
  predecessor: NodeRef | null;
  successors: NodeRef[];
  hops: number;
}

export class RingDriver {
  readonly core: RingNode;
  private readonly waiting = new Map<number, { resolve: (r: LookupResult) => void; reject: (e: EkvError) => void }>();
  private timer: NodeJS.Timeout | null = null;
  private readonly listeners: Array<(e: RingEvent) => void> = [];
  private flushScheduled = false;
  lookupsDone = 0;
  hopsTotal = 0;

  constructor(
    readonly self: NodeRef,
    private readonly peers: PeerPool,
    private readonly logger: Logger,
  ) {
    this.core = new RingNode({ self, config: ringConfig, rand: Math.random });
    peers.onWrongIdentity = (addr, expected) => {
      this.core.markDead({ id: expected, addr });
      this.scheduleFlush();
    };
  }

  onEvent(fn: (e: RingEvent) => void): void {
    this.listeners.push(fn);
  }

  /** Start ticking; with `join`, enter the ring of the node at that address (learning its id by attesting it). */
  async start(join: string | null): Promise<void> {
    // Ticking from the first call: a node whose join address is down still runs its ring (a rejoin through a
    // sealed neighbour, cluster/rejoin.ts, may bring it in meanwhile; a later call then only joins).
    if (!this.timer) {
      this.timer = setInterval(() => {
        this.core.tick();
        this.flush();
      }, tickMs);
      this.timer.unref();
    }
    if (join) {
      const id = await this.peers.identify(join);
      // Only a node still alone joins: the identify's timing is the host's, and a node a rejoin brought in
      // meanwhile (cluster/rejoin.ts) must not throw its ring view away for the join address (review-5 J1).
      if (id !== this.self.id && this.aloneActive()) {
        this.logger.debug({ via: join }, 'ring: joining');
        this.core.join({ id, addr: join });
      }
    }
    this.flush();
  }

  /** Active with no node but this one in view (the state start() joins from). */
  private aloneActive(): boolean {
    const c = this.core;
    return c.status === 'active' && c.successors.every((s) => s.id === this.self.id) && (c.predecessor === null || c.predecessor.id === this.self.id);
  }

  /** Enter the ring through an attested node (a node that found itself alone after a restart: cluster/rejoin.ts). */
  rejoin(via: { id: bigint; addr: string }): void {
    if (via.id === this.self.id) return;
    this.logger.debug({ via: via.addr }, 'ring: joining');
    this.core.join(via);
    this.flush();
  }

  /** Give up a join that cannot complete: a ring of one again, for the others to join (cluster/rejoin.ts). */
  standAlone(): void {
    if (this.core.status !== 'joining') return;
    this.logger.debug('ring: gave up joining, a ring of one again');
    this.core.standAlone();
    this.flush();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** A ring message from an attested peer. Its `from` must be the peer's own attested identity. */
  receive(raw: unknown, peerKey: Buffer): void {
    const from = (raw as { from?: { id?: unknown } } | null)?.from?.id;
    const expected = nodeIdFromPublicKey(peerKey);
    const claimed = from instanceof Uint8Array && from.length === 32 ? BigInt('0x' + Buffer.from(from).toString('hex')) : null;
    if (claimed !== expected) throw new EkvError('FORBIDDEN', 'ring message not from the attested sender');
    this.core.step(raw);
    this.scheduleFlush();
  }

  lookup(key: bigint): Promise<LookupResult> {
    return new Promise((resolve, reject) => {
      const rid = this.core.lookup(key, 'recursive');
      this.waiting.set(rid, { resolve, reject });
      this.flush();
    });
  }

  /**
   * Graceful leave: tells the neighbours (Chord's leave: they close the gap at once instead of after failure
   * detection). Resolves when those messages were answered or failed, or after `waitMs`, so that the caller does
   * not close the peer connections under them.
   */
  leave(waitMs = 1000): Promise<void> {
    this.core.leave();
    const sent = this.flush();
    if (sent.length === 0) return Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, waitMs);
      timer.unref();
    });
    return Promise.race([Promise.allSettled(sent).then(() => undefined), late]).finally(() => clearTimeout(timer));
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Sends what the core has for its peers and hands its events out; returns the sends (each settles, never rejects). */
  flush(): Array<Promise<void>> {
    const { messages, events } = this.core.ready();
    const sent = messages.map(({ to, msg }) => this.send(to, msg));
    for (const e of events) this.dispatch(e);
    return sent;
  }

  private send(to: NodeRef, msg: RingMessage): Promise<void> {
    return this.peers.call(to.addr, 'ring', { m: encodeRingValue(msg) }, peerMessageTimeoutMs, to.id).then(() => undefined, (err: unknown) => {
      this.logger.debug({ to: to.addr, type: msg.type, err: (err as Error).message }, 'ring message not delivered');
    });
  }

  private dispatch(e: RingEvent): void {
    if (e.type === 'joined') this.logger.debug({ successor: e.successor.addr }, 'ring: joined');
    if (e.type === 'lookup_done' || e.type === 'lookup_failed') {
      const w = this.waiting.get(e.rid);
      if (w) {
        this.waiting.delete(e.rid);
        if (e.type === 'lookup_done') {
          this.lookupsDone++;
          this.hopsTotal += e.hops;
          w.resolve({ owner: e.owner, predecessor: e.predecessor, successors: e.successors, hops: e.hops });
        } else w.reject(new EkvError('UNAVAILABLE', `lookup failed: ${e.reason}`));
      }
    }
    for (const fn of this.listeners) fn(e);
  }
}
