// The ring of a fault run (test/helpers/jepsen.ts) and what acts on it: JepsenRing (a local sealed ring and
// its faults: SIGSTOP / SIGCONT and kill -9 of enclaves, kill -9 of host proxy processes, a whole-ring crash
// and a restart in a chosen order), the clients' workload, and the probe writes and final reads after healing.
import type { Logger } from 'pino';
import { connect, EkvError, type EkvClient } from '../../client/index.ts';
import type { ClusterFile } from '../../client/cluster.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import type { LocalNode } from '../../cli/local/node.ts';
import { keyId } from '../../enclave/ring/index.ts';
import { recorded, rng, type Recorder } from './jepsen-history.ts';
import type { ClientHistOp } from './linearizability.ts';
import { testLogger } from './local-ring.ts';
import { ringOrder, sleep, toView, unsettled, type NodeView } from './ring-fixture.ts';

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
      // The view of an empty status (whatever fields NodeView has), marked as not answering.
      return { ...toView(addr, {}), ok: false, error, ring: '?' };
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
      const op: ClientHistOp = p < 0.4 ? { kind: 'get' }
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

/** Read every key through every node, retrying each read until it answers or `timeoutMs` passes. */
export async function finalReads(rec: Recorder, cluster: ClusterFile, keys: string[], timeoutMs: number): Promise<string[]> {
  const kv = await connect({ cluster, trustClusterFile: true, timeoutMs: 3000 });
  const missing: string[] = [];
  const deadline = Date.now() + timeoutMs;
  try {
    // Every node at once, so one that never answers does not use up the others' time.
    await Promise.all(cluster.nodes.map((n) => Promise.all(keys.map(async (key) => {
      for (;;) {
        const r = await recorded(rec, 'final', kv, key, { kind: 'get' }, n.addr);
        if (r.status === 'ok') return;
        if (Date.now() > deadline) {
          missing.push(`${key} via ${n.addr} (${r.error})`);
          return;
        }
        await sleep(200);
      }
    }))));
  } finally {
    await kv.close();
  }
  return missing;
}

