// The experiments behind `npm run sim`, after the Chord paper's figures.
import type { LookupMode } from '../../enclave/ring/events.ts';
import { keyId, nodeIdFromPublicKey } from '../../enclave/ring/id.ts';
import type { NodeRef } from '../../enclave/ring/messages.ts';
import { successorIndex } from './bootstrap.ts';
import { joinAll, runUntilConverged } from './build.ts';
import { converged, ringDiff } from './check.ts';
import { LookupCollector, type LookupStats, runLookups } from './lookups.ts';
import { makeRng, type Rng, shuffled } from './rng.ts';
import { Sim } from './sim.ts';

export const log2 = (n: number): number => Math.log2(n);

/** Node references whose ids come from the real derivation: SHA-256 of a (seeded, random) public key. */
export function makeRefs(n: number, rng: Rng): NodeRef[] {
  return Array.from({ length: n }, (_, i) => ({ id: nodeIdFromPublicKey(rng.bytes(32)), addr: `sim-${i}` }));
}

function newSim(seed: number, r: number): { sim: Sim; col: LookupCollector } {
  let col: LookupCollector | null = null;
  const sim: Sim = new Sim({ seed, config: { successorsMax: r }, onEvent: (n, e) => col?.handler(n, e) });
  col = new LookupCollector(() => sim.ticks);
  return { sim, col };
}

export interface PathRow {
  n: number;
  build: 'bootstrap' | 'joins';
  mode: LookupMode;
  halfLog2N: number;
  stats: LookupStats;
  convergeTicks?: number;
  seconds: number;
}

/** Phase 1: path length on a bootstrapped ring after some real stabilization rounds. */
export function pathLengthBootstrapped(n: number, lookups: number, seed: number, modes: LookupMode[]): PathRow[] {
  const t0 = performance.now();
  const r = Math.ceil(log2(n));
  const { sim, col } = newSim(seed, r);
  sim.bootstrap(makeRefs(n, makeRng(seed ^ 0x5eed)));
  sim.runTicks(2 * sim.config.stabilizeTicks);
  return modes.map((mode) => ({
    n, build: 'bootstrap', mode, halfLog2N: log2(n) / 2, stats: runLookups(sim, col, lookups, mode),
    seconds: (performance.now() - t0) / 1000,
  }));
}

/**
 * Phase 1b: the same ids, but the ring is built only by join + stabilize (one join
 * per tick through a random member), then run until every successor, predecessor,
 * successor list and finger is exact.
 */
export function pathLengthJoined(n: number, lookups: number, seed: number, maxTicks: number): PathRow {
  const t0 = performance.now();
  const r = Math.ceil(log2(n));
  const { sim, col } = newSim(seed, r);
  const refs = makeRefs(n, makeRng(seed ^ 0x5eed));
  joinAll(sim, refs, 1);
  const start = sim.ticks;
  const ok = runUntilConverged(sim, maxTicks, true);
  if (!ok) throw new Error(`join-built ring of ${n} did not converge in ${maxTicks} ticks (seed ${seed})`);
  return {
    n, build: 'joins', mode: 'recursive', halfLog2N: log2(n) / 2, stats: runLookups(sim, col, lookups, 'recursive'),
    convergeTicks: sim.ticks - start, seconds: (performance.now() - t0) / 1000,
  };
}

export interface FailureRow {
  n: number;
  r: number;
  p: number;
  /** Keys whose owner before the failure is dead: the paper's "failed lookups" (no replication). */
  lostKeyFraction: number;
  /** p^r: the chance that a node's whole successor list died. */
  pPowR: number;
  before: LookupStats;
  after: LookupStats;
  afterRingExact: boolean;
}

/** Phase 2: a fraction p of the nodes fail at once; lookups right away, then after stabilization. */
export function simultaneousFailures(n: number, p: number, lookups: number, seed: number, stabilizeTicks: number): FailureRow {
  const r = Math.ceil(log2(n));
  const { sim, col } = newSim(seed, r);
  const refs = makeRefs(n, makeRng(seed ^ 0x5eed));
  sim.bootstrap(refs);
  sim.runTicks(2 * sim.config.stabilizeTicks);
  const sortedBefore = sim.sortedLive();
  const dead = new Set(shuffled(refs, sim.rng).slice(0, Math.round(p * n)).map((x) => x.id));
  sim.killMany(dead);
  const before = runLookups(sim, col, lookups, 'recursive');
  sim.runTicks(stabilizeTicks);
  const afterRingExact = converged(ringDiff(sim, false), false);
  const after = runLookups(sim, col, lookups, 'recursive');
  let lost = 0;
  const probes = 10_000;
  for (let i = 0; i < probes; i++) {
    const owner = sortedBefore[successorIndex(sortedBefore, sim.rng.id256())] as NodeRef;
    if (dead.has(owner.id)) lost++;
  }
  return { n, r, p, lostKeyFraction: lost / probes, pPowR: p ** r, before, after, afterRingExact };
}

export interface LoadRow {
  n: number;
  keys: number;
  virtualPerNode: number;
  mean: number;
  max: number;
  maxOverMean: number;
  p1: number;
  p99: number;
  p99OverMean: number;
  seconds: number;
}

/** Phase 3: keys per node for n nodes and keysPerNode * n keys (SHA-256 ids), optionally with virtual nodes. */
export function loadSpread(n: number, keysPerNode: number, virtualPerNode: number, seed: number): LoadRow {
  const t0 = performance.now();
  const rng = makeRng(seed ^ 0x10ad);
  const points: Array<{ id: bigint; owner: number }> = [];
  for (let i = 0; i < n; i++) for (let v = 0; v < virtualPerNode; v++) points.push({ id: nodeIdFromPublicKey(rng.bytes(32)), owner: i });
  points.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const refs = points.map((p) => ({ id: p.id, addr: '' }));
  const counts = new Array<number>(n).fill(0);
  const keys = keysPerNode * n;
  const buf = Buffer.alloc(12);
  for (let k = 0; k < keys; k++) {
    buf.write(`key-${k}`.padEnd(12, '.'), 'latin1');
    const owner = (points[successorIndex(refs, keyId(buf))] as { owner: number }).owner;
    counts[owner] = (counts[owner] as number) + 1;
  }
  counts.sort((a, b) => a - b);
  const mean = keys / n;
  const max = counts[n - 1] as number;
  const p99 = counts[Math.floor(0.99 * (n - 1))] as number;
  return {
    n, keys, virtualPerNode, mean, max, maxOverMean: max / mean, p1: counts[Math.floor(0.01 * (n - 1))] as number, p99,
    p99OverMean: p99 / mean, seconds: (performance.now() - t0) / 1000,
  };
}
