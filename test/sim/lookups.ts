// Issues lookups from random live nodes and gathers their outcome against the oracle.
import type { RingEvent, LookupMode } from '../../enclave/ring/events.ts';
import type { NodeRef } from '../../enclave/ring/messages.ts';
import type { RingNode } from '../../enclave/ring/node.ts';
import { Sim } from './sim.ts';

export interface LookupOutcome {
  key: bigint;
  origin: bigint;
  startTick: number;
  done: boolean;
  owner: bigint | null;
  failure: string | null;
  hops: number;
  ticks: number;
}

/** Routes the simulator's event stream to the lookups it started. */
export class LookupCollector {
  private readonly pending = new Map<string, LookupOutcome>();
  constructor(private readonly now: () => number) {}

  handler = (node: RingNode, e: RingEvent): void => {
    if (e.type !== 'lookup_done' && e.type !== 'lookup_failed') return;
    const o = this.pending.get(`${node.self.id}:${e.rid}`);
    if (o === undefined) return;
    o.done = true;
    o.ticks = this.now() - o.startTick;
    if (e.type === 'lookup_done') {
      o.owner = e.owner.id;
      o.hops = e.hops;
    } else {
      o.failure = e.reason;
    }
  };

  start(node: RingNode, key: bigint, mode: LookupMode, tick: number): LookupOutcome {
    const o: LookupOutcome = { key, origin: node.self.id, startTick: tick, done: false, owner: null, failure: null, hops: 0, ticks: 0 };
    // Register before lookup() can emit (a local answer is emitted synchronously into Ready).
    const rid = node.lookup(key, mode);
    this.pending.set(`${node.self.id}:${rid}`, o);
    return o;
  }
}

export interface LookupStats {
  count: number;
  failed: number; // timed out, no route, or wrong owner
  wrongOwner: number;
  timedOut: number;
  /** Messages that carried a lookup to its owner (includes the owner's confirming hop). */
  meanHops: number;
  /** Chord's path length: hops to the key's predecessor, i.e. hops minus the final confirming hop. */
  meanPath: number;
  p1Path: number;
  p99Path: number;
  meanTicks: number;
}

/** Starts `count` lookups of random keys at random live nodes, runs until all finish, scores them. */
export function runLookups(sim: Sim, col: LookupCollector, count: number, mode: LookupMode): LookupStats {
  const live = sim.liveNodes().filter((n) => n.status === 'active');
  const outs: LookupOutcome[] = [];
  for (let i = 0; i < count; i++) {
    const node = live[sim.rng.int(live.length)] as RingNode;
    outs.push(col.start(node, sim.rng.id256(), mode, sim.ticks));
    sim.flush(node);
  }
  const limit = sim.now + (sim.config.lookupTimeoutTicks + 2) * sim.net.unitsPerTick;
  sim.runUntil(() => outs.every((o) => o.done), limit);
  return score(sim.sortedLive(), outs);
}

export function score(sorted: readonly NodeRef[], outs: readonly LookupOutcome[]): LookupStats {
  let failed = 0, wrongOwner = 0, timedOut = 0;
  const hops: number[] = [];
  let ticks = 0;
  for (const o of outs) {
    if (!o.done || o.failure !== null) {
      failed++;
      timedOut++;
      continue;
    }
    if (o.owner !== Sim.owner(sorted, o.key).id) {
      failed++;
      wrongOwner++;
      continue;
    }
    hops.push(o.hops);
    ticks += o.ticks;
  }
  const path = hops.map((h) => Math.max(0, h - 1)).sort((a, b) => a - b);
  const ok = hops.length;
  const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  return {
    count: outs.length, failed, wrongOwner, timedOut,
    meanHops: mean(hops),
    meanPath: mean(path),
    p1Path: ok ? (path[Math.floor(0.01 * (ok - 1))] as number) : NaN,
    p99Path: ok ? (path[Math.floor(0.99 * (ok - 1))] as number) : NaN,
    meanTicks: ok ? ticks / ok : NaN,
  };
}
