// A seeded discrete-event simulator driving many RingNode instances over an
// in-memory network. Time runs in units; every node ticks once per
// `unitsPerTick` units; each message takes a uniform delay in
// [delayMin, delayMax] units (a wide range reorders messages), may be dropped
// with `dropProbability`, and never crosses a partition. One seed replays a run.
import { defaultRingConfig, type RingConfig } from '../../enclave/ring/config.ts';
import type { RingEvent } from '../../enclave/ring/events.ts';
import type { NodeRef, RingMessage } from '../../enclave/ring/messages.ts';
import { RingNode } from '../../enclave/ring/node.ts';
import { bootstrapFromSortedIds, successorIndex } from './bootstrap.ts';
import { MinHeap } from './heap.ts';
import { makeRng, type Rng } from './rng.ts';

export interface NetOptions {
  unitsPerTick: number;
  delayMin: number;
  delayMax: number;
  dropProbability: number;
}

export const defaultNetOptions: NetOptions = { unitsPerTick: 10, delayMin: 1, delayMax: 8, dropProbability: 0 };

interface Delivery { time: number; seq: number; to: bigint; msg: RingMessage }

export interface SimOptions {
  seed: number;
  config?: Partial<RingConfig>;
  net?: Partial<NetOptions>;
  /** Called for every event any node emits, in delivery order. */
  onEvent?: (node: RingNode, e: RingEvent) => void;
}

export class Sim {
  readonly seed: number;
  readonly rng: Rng;
  readonly config: RingConfig;
  readonly net: NetOptions;
  readonly nodes = new Map<bigint, RingNode>();
  /** Live nodes in creation order (deterministic iteration). */
  private live: RingNode[] = [];
  private readonly queue = new MinHeap<Delivery>();
  private seq = 0;
  now = 0; // in units
  delivered = 0;
  droppedByNet = 0;
  /** Group number per node id: messages between different groups are dropped. */
  partition: Map<bigint, number> | null = null;
  private readonly onEvent: SimOptions['onEvent'];

  constructor(o: SimOptions) {
    this.seed = o.seed;
    this.rng = makeRng(o.seed);
    this.config = { ...defaultRingConfig, ...o.config };
    this.net = { ...defaultNetOptions, ...o.net };
    this.onEvent = o.onEvent;
  }

  get ticks(): number {
    return Math.floor(this.now / this.net.unitsPerTick);
  }

  liveNodes(): readonly RingNode[] {
    return this.live;
  }

  addNode(ref: NodeRef): RingNode {
    if (this.nodes.has(ref.id)) throw new Error(`duplicate node id (seed ${this.seed})`);
    const r = this.rng.fork();
    const node = new RingNode({ self: ref, config: this.config, rand: () => r.next() });
    this.nodes.set(ref.id, node);
    this.live.push(node);
    return node;
  }

  /** Adds nodes with the routing state of a converged ring (see bootstrap.ts). */
  bootstrap(refs: readonly NodeRef[]): RingNode[] {
    const sorted = refs.slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const states = bootstrapFromSortedIds(sorted, this.config.successorsMax, this.config.fingerBits);
    return sorted.map((ref, k) => {
      const n = this.addNode(ref);
      n.seedState(states[k] as (typeof states)[number]);
      this.flush(n);
      return n;
    });
  }

  /** Crash-stop: the node vanishes, messages to it are lost. */
  kill(id: bigint): void {
    const n = this.nodes.get(id);
    if (n === undefined) return;
    this.nodes.delete(id);
    this.live = this.live.filter((x) => x !== n);
  }

  killMany(ids: ReadonlySet<bigint>): void {
    for (const id of ids) this.nodes.delete(id);
    this.live = this.live.filter((x) => !ids.has(x.self.id));
  }

  /** Graceful leave: the node sends its leave messages, then stops. */
  leave(id: bigint): void {
    const n = this.nodes.get(id);
    if (n === undefined) return;
    n.leave();
    this.flush(n);
    this.kill(id);
  }

  /** Drains a node's Ready into the network and the event hook. */
  flush(n: RingNode): void {
    if (!n.hasReady()) return;
    const rd = n.ready();
    if (this.onEvent) for (const e of rd.events) this.onEvent(n, e);
    for (const { to, msg } of rd.messages) this.send(n.self.id, to.id, msg);
  }

  private send(from: bigint, to: bigint, msg: RingMessage): void {
    const net = this.net;
    if (net.dropProbability > 0 && this.rng.next() < net.dropProbability) {
      this.droppedByNet++;
      return;
    }
    if (this.partition && this.partition.get(from) !== this.partition.get(to)) {
      this.droppedByNet++;
      return;
    }
    const delay = net.delayMin + this.rng.int(net.delayMax - net.delayMin + 1);
    this.queue.push({ time: this.now + delay, seq: this.seq++, to, msg });
  }

  /** Runs until `ticks` more ticks have passed. */
  runTicks(ticks: number): void {
    const end = (this.ticks + ticks) * this.net.unitsPerTick;
    this.runUntil(() => false, end);
  }

  /** Runs until done() holds (checked after each tick) or the unit limit; returns whether done() held. */
  runUntil(done: () => boolean, endUnits: number): boolean {
    const upt = this.net.unitsPerTick;
    for (;;) {
      const nextTick = (Math.floor(this.now / upt) + 1) * upt;
      const head = this.queue.peek();
      if (head !== undefined && head.time < nextTick) {
        if (head.time > endUnits) break;
        this.queue.pop();
        this.now = head.time;
        this.deliver(head);
        continue;
      }
      if (nextTick > endUnits) break;
      this.now = nextTick;
      for (const n of this.live) {
        n.tick();
        this.flush(n);
      }
      if (done()) return true;
    }
    this.now = Math.max(this.now, endUnits);
    return done();
  }

  private deliver(d: Delivery): void {
    const n = this.nodes.get(d.to);
    if (n === undefined) return; // dead or gone
    this.delivered++;
    n.step(d.msg);
    this.flush(n);
  }

  // ---- oracles over the live set ----

  sortedLive(): NodeRef[] {
    return this.live.map((n) => n.self).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** The node that truly owns key among the live, active nodes. */
  static owner(sorted: readonly NodeRef[], key: bigint): NodeRef {
    return sorted[successorIndex(sorted, key)] as NodeRef;
  }
}
