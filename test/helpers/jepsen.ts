// Jepsen-style fault runs against real processes (issue 11, docs/fault-testing.md): a local ring of N
// emulated nodes (enclaves are child processes; with `hostProcess` each host proxy is its own `ekv host`
// process), K SDK clients doing random get / put / delete / compare-and-set on a few keys with unique
// values, every operation recorded as invoke -> ok | fail (certainly not applied) | info (outcome unknown),
// a fault schedule run against the processes, then healing, a final read of every key through every node,
// and the checks: per-key linearizability (test/helpers/linearizability.ts, WGL; an `info` write may take
// effect at any time after its invocation, or never), no acknowledged write lost (the final read's version is
// at least that of every acknowledged write), no two values acknowledged at one version, no value of a
// write reported as failed ever read.
//
// Used by test/e2e-jepsen.test.ts (short runs) and `npm run jepsen` (test/jepsen/run.ts, long runs).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { connect, EkvError, type EkvClient } from '../../client/index.ts';
import type { ClusterFile } from '../../client/cluster.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import type { LocalNode } from '../../cli/local/node.ts';
import { keyId } from '../../enclave/ring/index.ts';
import { checkHistory, checkKey, type HistEntry, type HistOp, type HistOut } from './linearizability.ts';
import { testLogger } from './local-ring.ts';
import { ringOrder, sleep, toView, unsettled, type NodeView } from './ring-fixture.ts';

// ---------------------------------------------------------------------------------------------------
// Randomness (seeded) and the history.

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Failures after which a write's outcome is unknown (client/index.ts put/delete contract). */
export const unknownOutcomeCodes: ReadonlySet<string> = new Set(['UNAVAILABLE', 'TIMEOUT', 'CLOSED', 'EXPIRED']);

export type Status = 'invoke' | 'ok' | 'fail' | 'info';

export interface Rec {
  client: string;
  key: string;
  op: HistOp;
  /** Logical times (distinct across the history); ret is Infinity while pending or when the outcome is unknown. */
  call: number;
  ret: number;
  /** Milliseconds since the run began (monotonic clock), for reading a dump against the fault log. */
  t0: number;
  t1: number | null;
  status: Status;
  out: HistOut | null;
  error?: string;
  via?: string;
}

export interface FaultEvent {
  t: number;
  at: number;
  what: string;
}

export class Recorder {
  readonly ops: Rec[] = [];
  readonly faults: FaultEvent[] = [];
  private clock = 0;
  private readonly start = performance.now();

  ms(): number {
    return Math.round((performance.now() - this.start) * 10) / 10;
  }

  invoke(client: string, key: string, op: HistOp, via?: string): Rec {
    const r: Rec = { client, key, op, call: ++this.clock, ret: Infinity, t0: this.ms(), t1: null, status: 'invoke', out: null };
    if (via !== undefined) r.via = via;
    this.ops.push(r);
    return r;
  }

  ok(r: Rec, out: HistOut): void {
    r.ret = ++this.clock;
    r.t1 = this.ms();
    r.status = 'ok';
    r.out = out;
  }

  /** Certainly not applied (a refusal). */
  fail(r: Rec, code: string): void {
    r.ret = ++this.clock;
    r.t1 = this.ms();
    r.status = 'fail';
    r.error = code;
  }

  /** Outcome unknown: the op may take effect at any time after its invocation, or never. */
  info(r: Rec, code: string): void {
    r.t1 = this.ms();
    r.status = 'info';
    r.error = code;
  }

  /** A fault (or heal) event, at this point of the history. */
  mark(what: string): void {
    this.faults.push({ t: this.ms(), at: ++this.clock, what });
  }

  /** The history for the checker: ok ops, and info/invoke ops as outcome-unknown; failed ones did not happen. */
  history(): HistEntry[] {
    const out: HistEntry[] = [];
    for (const r of this.ops) {
      if (r.status === 'fail') continue;
      out.push({ key: r.key, op: r.op, call: r.call, ret: r.status === 'ok' ? r.ret : Infinity, out: r.status === 'ok' ? r.out : null, client: r.client });
    }
    return out;
  }
}

/** Record one SDK call: ok with its answer, fail (a refusal) or info (unknown outcome), by the SDK's contract. */
export async function recorded(rec: Recorder, client: string, kv: EkvClient, key: string, op: HistOp, via?: string): Promise<Rec> {
  const r = rec.invoke(client, key, op, via);
  try {
    if (op.kind === 'get') {
      const g = via ? await rawGet(kv, via, key) : await kv.getWithVersion(key).then((x) => ({ value: x.value.toString(), version: x.version }));
      rec.ok(r, g ? { kind: 'get', found: true, value: g.value, version: g.version } : { kind: 'get', found: false, value: null, version: 0 });
    } else if (op.kind === 'put') {
      const version = await kv.put(key, op.value, op.ifVersion === null ? undefined : { ifVersion: op.ifVersion });
      rec.ok(r, op.ifVersion === 0 ? { kind: 'write', version, existed: false } : { kind: 'write', version });
    } else {
      const d = await kv.delete(key, op.ifVersion === null ? undefined : { ifVersion: op.ifVersion });
      // Deleting a key without a value answers version 0 (not the tombstone's): the same as reading "absent".
      if (!d.deleted) {
        r.op = { kind: 'get' };
        rec.ok(r, { kind: 'get', found: false, value: null, version: 0 });
      } else rec.ok(r, { kind: 'write', version: d.version, existed: true });
    }
  } catch (err) {
    const code = err instanceof EkvError ? err.code : ((err as { code?: string }).code ?? 'ERROR');
    if (op.kind === 'get' && code === 'NOT_FOUND') rec.ok(r, { kind: 'get', found: false, value: null, version: 0 });
    else if (code === 'CONFLICT' && op.kind !== 'get' && op.ifVersion !== null && err instanceof EkvError && err.version !== undefined) {
      rec.ok(r, { kind: 'conflict', version: err.version });
    } else if (op.kind === 'get') rec.info(r, code); // a failed read constrains nothing
    else if (err instanceof EkvError && !unknownOutcomeCodes.has(code) && code !== 'CONFLICT') rec.fail(r, code);
    else rec.info(r, code); // includes a CONFLICT that is not a compare-and-set's answer, and non-EkvErrors
  }
  return r;
}

/** A read sent to one node (it forwards to the key's owner): value and version, or null for NOT_FOUND. */
async function rawGet(kv: EkvClient, addr: string, key: string): Promise<{ value: string; version: number } | null> {
  try {
    const r = await kv.node(addr).call('get', { k: Buffer.from(key) });
    if (!(r.v instanceof Uint8Array) || typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed get answer');
    return { value: Buffer.from(r.v).toString(), version: r.n };
  } catch (err) {
    if (err instanceof EkvError && err.code === 'NOT_FOUND') return null;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// The ring under test, and its faults.

export interface RingOptions {
  nodes: number;
  replicas: number;
  /** Each node's host proxy as its own `ekv host` process (needed to kill -9 a host). */
  hostProcess?: boolean;
  logger?: Logger;
}

export class JepsenRing {
  ring: LocalRing;
  /** Enclave pids this process has SIGSTOPped and not yet resumed: resumed before any clean-up. */
  private readonly stopped = new Set<number>();
  private readonly statusClients = new Map<string, Promise<EkvClient>>();

  private constructor(ring: LocalRing, readonly o: RingOptions & { dir: string; logger: Logger }) {
    this.ring = ring;
  }

  static async start(o: RingOptions & { dir: string }): Promise<JepsenRing> {
    const logger = o.logger ?? testLogger();
    const ring = await startLocalRing({
      dir: o.dir, nodes: o.nodes, replicas: o.replicas, logger, seal: true, rememberTrust: false,
      ...(o.hostProcess ? { hostProcess: true } : {}),
    });
    return new JepsenRing(ring, { ...o, logger });
  }

  get cluster(): ClusterFile {
    return this.ring.cluster;
  }

  get size(): number {
    return this.ring.nodes.length;
  }

  node(i: number): LocalNode {
    const n = this.ring.nodes[i];
    if (!n) throw new Error(`no node ${i}`);
    return n;
  }

  name(i: number): string {
    return this.node(i).name;
  }

  private enclavePid(i: number): number {
    const pid = this.node(i).enclave?.pid;
    if (!pid) throw new Error(`${this.name(i)} runs no enclave`);
    return pid;
  }

  /** SIGSTOP node i's enclave (its clock keeps running, as CLOCK_MONOTONIC does); returns its pid for resume(). */
  pause(i: number): number {
    const pid = this.enclavePid(i);
    this.stopped.add(pid);
    process.kill(pid, 'SIGSTOP');
    return pid;
  }

  resume(pid: number): void {
    this.stopped.delete(pid);
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // already gone
    }
  }

  resumeAll(): void {
    for (const pid of [...this.stopped]) this.resume(pid);
  }

  /** kill -9 node i's enclave; its LocalNode launches it again 500 ms later (sealed state: same identity). */
  kill9(i: number): number {
    const pid = this.enclavePid(i);
    this.stopped.delete(pid);
    process.kill(pid, 'SIGKILL');
    return pid;
  }

  /** Resolves once node i runs an enclave other than `oldPid` that answers `status`. */
  async waitRelaunched(i: number, oldPid: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const pid = this.node(i).enclave?.pid;
      if (pid && pid !== oldPid && (await this.status(this.node(i).addr)).ok) return true;
      await sleep(200);
    }
    return false;
  }

  async killHost(i: number): Promise<number> {
    return this.node(i).killHost();
  }

  async reviveHost(i: number): Promise<void> {
    await this.node(i).reviveHost();
  }

  /** The whole ring crashes at once: kill -9 every enclave (and host process), then stop what is left. */
  async crashAll(): Promise<void> {
    this.resumeAll();
    await this.closeStatusClients();
    for (const n of this.ring.nodes) {
      const pid = n.enclave?.pid;
      if (pid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    await Promise.all(this.ring.nodes.map((n) => n.hostProcess?.kill9()));
    await this.ring.stop();
  }

  /**
   * Start the ring again from its directory, nodes one at a time in `order`, `gapMs` apart; resolves once
   * every enclave accepts connections (whether the ring forms and serves is for the run to find out).
   */
  async restart(order: number[], gapMs: number): Promise<void> {
    this.ring = await startLocalRing({
      dir: this.o.dir, nodes: this.o.nodes, replicas: this.o.replicas, logger: this.o.logger, seal: true, rememberTrust: false,
      startOrder: order, startGapMs: gapMs, formTimeoutMs: 0, ...(this.o.hostProcess ? { hostProcess: true } : {}),
    });
  }

  private statusClient(addr: string): Promise<EkvClient> {
    let c = this.statusClients.get(addr);
    if (!c) this.statusClients.set(addr, (c = connect({ nodes: [addr], trust: this.cluster.trust, timeoutMs: 3000 })));
    return c;
  }

  private async closeStatusClients(): Promise<void> {
    for (const c of this.statusClients.values()) await c.then((x) => x.close(), () => undefined);
    this.statusClients.clear();
  }

  /** Node i's own `status` answer (counters included), or null if it does not answer within 3 s. */
  async stats(i: number): Promise<Record<string, unknown> | null> {
    const addr = this.node(i).addr;
    try {
      const c = await this.statusClient(addr);
      return await Promise.race([
        c.node(addr).call('status', {}),
        sleep(3000).then(() => Promise.reject(new EkvError('TIMEOUT', 'status timed out'))),
      ]);
    } catch {
      return null;
    }
  }

  async status(addr: string): Promise<NodeView> {
    try {
      const c = await this.statusClient(addr);
      const s = await Promise.race([
        c.node(addr).call('status', {}),
        sleep(3000).then(() => Promise.reject(new EkvError('TIMEOUT', 'status timed out'))),
      ]);
      return toView(addr, s);
    } catch (err) {
      const error = (err as { code?: string }).code ?? (err as Error).message;
      return { addr, ok: false, error, id: null, ring: '?', serving: false, predecessor: null, successors: [], keys: 0, lookups: 0, hops: 0 };
    }
  }

  statusAll(): Promise<NodeView[]> {
    return Promise.all(this.ring.nodes.map((n) => this.status(n.addr)));
  }

  /** Waits until the nodes form one settled ring; the reason it is not, or null. Never throws. */
  async settle(timeoutMs: number): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const why = unsettled(await this.statusAll());
      if (why === null || Date.now() > deadline) return why;
      await sleep(200);
    }
  }

  /** The key's owner as the ring says (the `route` steps clients walk), or null if no walk ends at an owner. */
  private async routedOwner(key: string): Promise<string | null> {
    let addr = this.node(0).addr;
    for (let step = 0; step < 8; step++) {
      try {
        const c = await this.statusClient(addr);
        const r = await c.node(addr).call('route', { k: Buffer.from(key) });
        if (r.r === 'owner') return addr;
        if (r.r !== 'next' || typeof r.addr !== 'string') return null;
        addr = r.addr;
      } catch {
        return null;
      }
    }
    return null;
  }

  /**
   * Node indices holding `key` on the settled ring: its owner first (as the ring routes it; else by Chord
   * placement from the nodes' ids), then the R-1 nodes after it in ring order.
   */
  async holders(key: string): Promise<number[]> {
    const order = ringOrder(await this.statusAll());
    if (order.length !== this.size) throw new Error('not every node answered status');
    const routed = await this.routedOwner(key);
    const kid = keyId(Buffer.from(key));
    let first = routed !== null ? order.findIndex((v) => v.addr === routed) : -1;
    if (first === -1) first = order.findIndex((v) => (v.id as bigint) >= kid);
    if (first === -1) first = 0;
    const out: number[] = [];
    for (let j = 0; j < Math.min(this.o.replicas, order.length); j++) {
      const addr = (order[(first + j) % order.length] as NodeView).addr;
      out.push(this.ring.nodes.findIndex((n) => n.addr === addr));
    }
    return out;
  }

  /** Undo every fault still in force: resume paused enclaves, start killed host processes again. */
  async heal(): Promise<void> {
    this.resumeAll();
    for (const n of this.ring.nodes) {
      const hp = n.hostProcess;
      if (hp && (await Promise.race([hp.exited.then(() => true), sleep(0).then(() => false)]))) await n.reviveHost();
    }
  }

  async stop(): Promise<void> {
    this.resumeAll(); // a stopped process cannot even be terminated gracefully
    await this.closeStatusClients();
    await this.ring.stop();
  }
}

// ---------------------------------------------------------------------------------------------------
// Clients.

export interface WorkloadOptions {
  clients: number;
  keys: string[];
  seed: number;
  /** The SDK's per-request timeout (it retries on the other nodes after UNAVAILABLE / CLOSED / TIMEOUT). */
  timeoutMs: number;
  /** Random pause between operations, 0..thinkMs (default 20). */
  thinkMs?: number;
}

/** K SDK clients, each sequential, each connected to every node (the SDK's own routing and retries). */
export class Workload {
  private running = false;
  private loops: Array<Promise<void>> = [];
  private readonly kvs: EkvClient[] = [];

  constructor(private readonly cluster: ClusterFile, private readonly rec: Recorder, private readonly o: WorkloadOptions) {}

  async start(): Promise<void> {
    this.running = true;
    for (let i = 0; i < this.o.clients; i++) {
      const kv = await connect({ cluster: this.cluster, trustClusterFile: true, timeoutMs: this.o.timeoutMs });
      this.kvs.push(kv);
      this.loops.push(this.client(i, kv));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    for (const kv of this.kvs) await kv.close();
  }

  private async client(i: number, kv: EkvClient): Promise<void> {
    const rand = rng(this.o.seed * 1000 + i + 1);
    const name = `c${i}`;
    const seen = new Map<string, number>(); // the last version this client saw per key, for compare-and-set
    const think = this.o.thinkMs ?? 20;
    // After a write whose outcome is unknown, the client only reads until a read succeeds: during an outage
    // it does not pile up unknown writes, each of which the checker must try at every later point (the
    // search grows with them), while a failed read constrains nothing and costs nothing.
    let degraded = false;
    for (let n = 1; this.running; n++) {
      const key = this.o.keys[Math.floor(rand() * this.o.keys.length)] as string;
      const p = degraded ? 0 : rand();
      const cas = seen.get(key) ?? 0;
      const op: HistOp = p < 0.4 ? { kind: 'get' }
        : p < 0.7 ? { kind: 'put', value: `${name}-${n}`, ifVersion: null }
        : p < 0.85 ? { kind: 'put', value: `${name}-${n}`, ifVersion: cas }
        : p < 0.95 ? { kind: 'del', ifVersion: null }
        : { kind: 'del', ifVersion: cas };
      const r = await recorded(this.rec, name, kv, key, op);
      if (r.status === 'ok' && r.out) seen.set(key, r.out.kind === 'get' ? (r.out.found ? r.out.version : 0) : r.out.version);
      if (r.status === 'info' && op.kind !== 'get') degraded = true;
      if (r.status === 'ok' && op.kind === 'get') degraded = false;
      if (r.status !== 'ok') await sleep(50 + rand() * 100);
      else if (think > 0) await sleep(rand() * think);
    }
  }
}

/**
 * After healing, one write to every key (client 'probe', recorded like any other), retried until one is
 * acknowledged or `timeoutMs` passes: the keys that took none (the node holding them stays broken once its
 * faults are gone: issue 11's row 2).
 */
export async function probeWrites(rec: Recorder, cluster: ClusterFile, keys: string[], timeoutMs: number): Promise<string[]> {
  const kv = await connect({ cluster, trustClusterFile: true, timeoutMs: 3000 });
  const deadline = Date.now() + timeoutMs;
  const stuck: string[] = [];
  try {
    await Promise.all(keys.map(async (key) => {
      for (let n = 1; ; n++) {
        const r = await recorded(rec, 'probe', kv, key, { kind: 'put', value: `probe-${key}-${n}`, ifVersion: null });
        if (r.status === 'ok') return;
        if (Date.now() > deadline) {
          stuck.push(`${key} (${r.error})`);
          return;
        }
        await sleep(300);
      }
    }));
  } finally {
    await kv.close();
  }
  return stuck;
}

/** Read every key through every node, retrying each until it answers or `timeoutMs` passes. */
export async function finalReads(rec: Recorder, cluster: ClusterFile, keys: string[], timeoutMs: number): Promise<string[]> {
  const kv = await connect({ cluster, trustClusterFile: true, timeoutMs: 3000 });
  const missing: string[] = [];
  const deadline = Date.now() + timeoutMs;
  try {
    for (const n of cluster.nodes) {
      await Promise.all(keys.map(async (key) => {
        for (;;) {
          const r = await recorded(rec, 'final', kv, key, { kind: 'get' }, n.addr);
          if (r.status === 'ok') return;
          if (Date.now() > deadline) {
            missing.push(`${key} via ${n.addr} (${r.error})`);
            return;
          }
          await sleep(200);
        }
      }));
    }
  } finally {
    await kv.close();
  }
  return missing;
}

// ---------------------------------------------------------------------------------------------------
// The checks.

export interface Anomalies {
  /** Keys whose history is not linearizable. */
  nonLinearizableKeys: number;
  /** Acknowledged writes whose version is above the key's final read. */
  lostWrites: number;
  /** Two different values acknowledged (by a write or a read) at one version of a key. */
  versionConflicts: number;
  /** Reads that returned the value of a write reported as failed (certainly not applied). */
  failedButApplied: number;
  /** Keys whose final read never answered through some node. */
  finalUnavailable: number;
  /** Keys the checker could not decide (search bound hit). */
  undecided: number;
  /** Keys that took no write after healing (probeWrites). */
  unwritableAfterHeal: number;
}

export interface Verdict {
  ok: boolean;
  anomalies: Anomalies;
  problems: string[];
  counts: { ops: number; ok: number; fail: number; info: number; reads: number; writes: number; checked: number; errors: Record<string, number> };
}

export function check(rec: Recorder, finalMissing: string[], stuck: string[] = [], statesMax = 2_000_000): Verdict {
  const problems: string[] = [];
  const hist = rec.history();
  const lin = checkHistory(hist, statesMax);
  let undecided = 0;
  for (const f of lin.failures) {
    if (f.exhausted) undecided++;
    problems.push(describe(f.key, f.exhausted === true, f.ops, hist, rec.faults));
  }
  // Lost acknowledged writes: a final read that finds a value must have a version at or above every
  // acknowledged one (the lowest such read counts). A final NOT_FOUND carries no version (a delete's tombstone
  // is not shown to clients): whether it is explained by an acknowledged or unknown delete is the
  // linearizability check's to say.
  const finalVersion = new Map<string, number>();
  for (const r of rec.ops) {
    if (r.client !== 'final' || r.status !== 'ok' || r.out?.kind !== 'get' || !r.out.found) continue;
    finalVersion.set(r.key, Math.min(finalVersion.get(r.key) ?? Infinity, r.out.version));
  }
  let lostWrites = 0;
  for (const r of rec.ops) {
    if (r.status !== 'ok' || r.out?.kind !== 'write') continue;
    const fv = finalVersion.get(r.key);
    if (fv !== undefined && fv < r.out.version) {
      lostWrites++;
      if (lostWrites <= 10) problems.push(`lost acknowledged write: ${r.key} ${r.op.kind === 'put' ? r.op.value : 'del'} v${r.out.version} by ${r.client} at ${r.t1} ms; final read v${fv}`);
    }
  }
  // Version conflicts: per key and version, the values acknowledged (null = a delete's tombstone).
  const atVersion = new Map<string, string | null>();
  const conflicting = new Set<string>();
  for (const r of rec.ops) {
    if (r.status !== 'ok' || !r.out) continue;
    let value: string | null;
    let version: number;
    if (r.out.kind === 'get' && r.out.found) ({ value, version } = { value: r.out.value, version: r.out.version });
    else if (r.out.kind === 'write') ({ value, version } = { value: r.op.kind === 'put' ? r.op.value : null, version: r.out.version });
    else continue;
    const k = `${r.key}\u0000${version}`;
    if (!atVersion.has(k)) atVersion.set(k, value);
    else if (atVersion.get(k) !== value && !conflicting.has(k)) {
      conflicting.add(k);
      if (conflicting.size <= 10) problems.push(`version conflict: ${r.key} v${version} is both ${atVersion.get(k) ?? 'deleted'} and ${value ?? 'deleted'}`);
    }
  }
  // Failed writes that took effect.
  const failedValues = new Map<string, Rec>();
  for (const r of rec.ops) if (r.status === 'fail' && r.op.kind === 'put') failedValues.set(`${r.key}\u0000${r.op.value}`, r);
  let failedButApplied = 0;
  for (const r of rec.ops) {
    if (r.status !== 'ok' || r.out?.kind !== 'get' || !r.out.found) continue;
    const f = failedValues.get(`${r.key}\u0000${r.out.value}`);
    if (f) {
      failedButApplied++;
      if (failedButApplied <= 5) problems.push(`a write reported failed (${f.error}) took effect: ${r.key} ${r.out.value} read by ${r.client} at ${r.t1} ms`);
    }
  }
  for (const m of finalMissing.slice(0, 10)) problems.push(`final read never answered: ${m}`);
  for (const k of stuck) problems.push(`no write acknowledged after healing: ${k}`);
  const finalKeys = new Set(finalMissing.map((m) => m.split(' ')[0]));
  const anomalies: Anomalies = {
    nonLinearizableKeys: lin.failures.length - undecided, lostWrites, versionConflicts: conflicting.size, failedButApplied,
    finalUnavailable: finalKeys.size, undecided, unwritableAfterHeal: stuck.length,
  };
  const errors: Record<string, number> = {};
  for (const r of rec.ops) if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
  const counts = {
    ops: rec.ops.length,
    ok: rec.ops.filter((r) => r.status === 'ok').length,
    fail: rec.ops.filter((r) => r.status === 'fail').length,
    info: rec.ops.filter((r) => r.status === 'info' || r.status === 'invoke').length,
    reads: rec.ops.filter((r) => r.op.kind === 'get').length,
    writes: rec.ops.filter((r) => r.op.kind !== 'get').length,
    checked: lin.ops,
    errors,
  };
  const ok = Object.values(anomalies).every((n) => n === 0);
  return { ok, anomalies, problems, counts };
}

function showOp(h: HistEntry): string {
  const op = h.op.kind === 'get' ? 'get' : h.op.kind === 'put' ? `put ${h.op.value}${h.op.ifVersion !== null ? ` if v${h.op.ifVersion}` : ''}` : `del${h.op.ifVersion !== null ? ` if v${h.op.ifVersion}` : ''}`;
  const out = !h.out ? '?' : h.out.kind === 'get' ? (h.out.found ? `${h.out.value} v${h.out.version}` : 'NOT_FOUND') : h.out.kind === 'write' ? `ok v${h.out.version}` : `CONFLICT v${h.out.version}`;
  return `[${h.call}, ${h.ret === Infinity ? '∞' : h.ret}] ${h.client ?? ''} ${op} -> ${out}`;
}

/** The shortest failing prefix of a key's history (by bisection over its return times), and its last operations. */
function describe(key: string, exhausted: boolean, n: number, history: readonly HistEntry[], faults: readonly FaultEvent[]): string {
  if (exhausted) return `key ${key}: search exhausted (${n} ops), not decided`;
  const ops = history.filter((h) => h.key === key && !(h.op.kind === 'get' && !h.out));
  const cut = (t: number) => ops.filter((h) => h.call <= t).map((h) => (h.ret <= t ? h : { ...h, ret: Infinity, out: null }));
  const times = [...new Set(ops.map((h) => h.ret).filter((t) => Number.isFinite(t)))].sort((a, b) => a - b);
  let lo = 0;
  let hi = times.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (checkKey(key, cut(times[mid] as number)).ok) lo = mid + 1;
    else hi = mid;
  }
  const t = times[lo] as number;
  const last = ops.filter((h) => h.call <= t).slice(-12);
  // The fault events among them, at their place in the history.
  const from = last[0]?.call ?? 0;
  const lines = [
    ...last.map((h) => ({ at: h.call, line: `    ${showOp(h)}` })),
    ...faults.filter((f) => f.at >= from && f.at <= t).map((f) => ({ at: f.at, line: `    -- ${f.at}: ${f.what}` })),
  ].sort((a, b) => a.at - b.at);
  const shown = lines.map((l) => l.line);
  return `key ${key}: not linearizable (${n} ops); the shortest failing prefix ends at ${t}:\n${shown.join('\n')}`;
}

// ---------------------------------------------------------------------------------------------------
// A whole run.

export interface FaultContext {
  ring: JepsenRing;
  rec: Recorder;
  keys: string[];
  rand: () => number;
  /** Log a fault event (recorded in the history's fault log, and printed). */
  mark(what: string): void;
  /** Record a figure about the faults (e.g. that a fault took hold), returned in the result. */
  fact(name: string, value: number): void;
}

export interface RunOptions {
  name: string;
  ring: RingOptions;
  clients: number;
  keys: number;
  seed: number;
  /** The SDK's per-request timeout (default 2000 ms). */
  timeoutMs?: number;
  /** Operations before the first fault (default 1500 ms). */
  warmupMs?: number;
  /** The fault schedule; the run heals whatever is left in force when it returns (or throws). */
  faults: (ctx: FaultContext) => Promise<void>;
  /** Operations after healing, before the final reads (default 3000 ms). */
  healMs?: number;
  /** How long to wait for the ring to settle after healing (default 30 s). */
  settleMs?: number;
  /** How long each final read may be retried (default 15 s). */
  finalMs?: number;
  /** Print progress and the summary (default: console.log). */
  log?: (line: string) => void;
  /** Keep the run directory (ring state and history) even when the run passes. */
  keep?: boolean;
}

export interface RunResult {
  ok: boolean;
  name: string;
  seed: number;
  verdict: Verdict;
  faults: FaultEvent[];
  /** One line (and the problems, on failure) for the test's message. */
  summary: string;
  /** Figures the schedule recorded (FaultContext.fact). */
  facts: Record<string, number>;
  /** Where the history was written (on failure, or with keep). */
  dumpPath: string | null;
  durationMs: number;
}

export async function runJepsen(o: RunOptions): Promise<RunResult> {
  const began = Date.now();
  const log = o.log ?? ((line: string) => console.log(line));
  const runDir = mkdtempSync(join('/tmp', 'ekv-jepsen-'));
  const rec = new Recorder();
  const keys = Array.from({ length: o.keys }, (_, i) => `jk${i}`);
  const rand = rng(o.seed);
  let ring: JepsenRing | null = null;
  let work: Workload | null = null;
  let verdict: Verdict;
  let settled: string | null = null;
  const facts: Record<string, number> = {};
  let scheduleError: string | null = null;
  const fault = (what: string) => {
    rec.mark(what);
    log(`[${o.name}] ${(rec.ms() / 1000).toFixed(1)}s ${what}`);
  };
  try {
    ring = await JepsenRing.start({ ...o.ring, dir: join(runDir, 'ring') });
    const why = await ring.settle(30_000);
    if (why) throw new Error(`the ring did not settle before the run: ${why}`);
    work = new Workload(ring.cluster, rec, { clients: o.clients, keys, seed: o.seed, timeoutMs: o.timeoutMs ?? 2000 });
    await work.start();
    await sleep(o.warmupMs ?? 1500);
    try {
      await o.faults({ ring, rec, keys, rand, mark: fault, fact: (name, value) => { facts[name] = (facts[name] ?? 0) + value; } });
    } catch (err) {
      // A schedule that cannot go on (e.g. a node that does not come back) fails the run, after the checks.
      scheduleError = (err as Error).message;
      fault(`schedule failed: ${scheduleError}`);
    } finally {
      await ring.heal();
      fault('healed');
    }
    await sleep(o.healMs ?? 3000);
    settled = await ring.settle(o.settleMs ?? 30_000);
    if (settled) fault(`not settled ${o.settleMs ?? 30_000} ms after healing: ${settled}`);
    await work.stop();
    work = null;
    const stuck = await probeWrites(rec, ring.cluster, keys, o.finalMs ?? 15_000);
    const missing = await finalReads(rec, ring.cluster, keys, o.finalMs ?? 15_000);
    verdict = check(rec, missing, stuck);
    if (scheduleError) {
      verdict.ok = false;
      verdict.problems.unshift(`the fault schedule failed: ${scheduleError}`);
    }
  } catch (err) {
    // The run could not be checked at all (e.g. the ring never formed): nothing worth keeping.
    await work?.stop().catch(() => undefined);
    await ring?.stop().catch(() => undefined);
    work = null;
    ring = null;
    rmSync(runDir, { recursive: true, force: true });
    throw err;
  } finally {
    await work?.stop().catch(() => undefined);
    await ring?.stop().catch(() => undefined);
  }
  const c = verdict.counts;
  const a = verdict.anomalies;
  const anomalyText = Object.entries(a).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const faultText = rec.faults.map((f) => `${(f.t / 1000).toFixed(1)}s ${f.what}`).join('; ');
  let summary = `[${o.name}] seed ${o.seed}: ${c.ops} ops (${c.reads} reads, ${c.writes} writes): ok ${c.ok}, fail ${c.fail}, unknown ${c.info}; ` +
    `checked ${c.checked} ops; errors ${JSON.stringify(c.errors)}; anomalies: ${anomalyText}; facts ${JSON.stringify(facts)}; faults: ${faultText}`;
  let dumpPath: string | null = null;
  if (!verdict.ok || o.keep) {
    dumpPath = join(runDir, 'history.json');
    writeFileSync(dumpPath, JSON.stringify({ name: o.name, seed: o.seed, options: { ...o, faults: undefined, log: undefined }, verdict, facts, faults: rec.faults, ops: rec.ops }, (_k, v) => (v === Infinity ? null : v)));
    summary += `\n  history: ${dumpPath}`;
  }
  if (!verdict.ok) summary += '\n' + verdict.problems.slice(0, 8).map((p) => `  ${p}`).join('\n');
  rmSync(join(runDir, 'ring'), { recursive: true, force: true });
  if (!dumpPath) rmSync(runDir, { recursive: true, force: true });
  log(summary);
  return { ok: verdict.ok, name: o.name, seed: o.seed, verdict, faults: rec.faults, facts, summary, dumpPath, durationMs: Date.now() - began };
}
