// A multi-node ring for the e2e ring tests and the ring benchmark: the nodes
// of startLocalRing (as `ekv up` runs them) in a fresh short temp directory,
// one SDK client per node address, the nodes' ring views (`status`), the
// copies every key should have, and the faults: kill -9 an enclave, add a
// node, remove one gracefully, start a node from another image.
//
// Also Workload: concurrent writers (one sequential writer per key, values
// `${key}#${seq}`) and readers over every node, recorded in a History.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { connect, EkvError, type EkvClient, type TrustPolicy } from '../../client/index.ts';
import type { ImageSettings } from '../../cli/local/image.ts';
import { kmsEnv, localBlobStore, type LocalKmsInfo } from '../../cli/local/kms.ts';
import { LocalNode } from '../../cli/local/node.ts';
import { provideRingSecret, startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import { enclaveDataConfig } from '../../enclave/cluster/data-store.ts';
import { shardOf, shardStart } from '../../enclave/data/index.ts';
import { idFromBytes, inRange, keyId } from '../../enclave/ring/index.ts';
import type { History } from './history.ts';
import { defaultImagePath, shortTempDir, testLogger } from './local-ring.ts';

export const clientTimeoutMs = 10_000;
const statusTimeoutMs = 3000;
const pollMs = 200;

/** One node's ring view, from its `status` operation; ok false when it did not answer. */
export interface NodeView {
  addr: string;
  ok: boolean;
  error?: string;
  id: bigint | null;
  ring: string;
  serving: boolean;
  predecessor: string | null;
  successors: string[];
  keys: number;
  lookups: number;
  hops: number;
  /** Client operations this node forwarded to a range's owner. */
  forwards: number;
  /** Why a node is not serving (status `waiting`: ranges without enough members or an active owner here). */
  waiting?: string[];
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `probe` until it returns a value that is not null, or throw after `timeoutMs` with the last reason. */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = 'never probed';
  for (;;) {
    const r = await probe();
    if (typeof r !== 'string') return r;
    last = r;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${last}`);
    await sleep(pollMs);
  }
}

export function toView(addr: string, s: Record<string, unknown>): NodeView {
  const ref = (x: unknown) => ((x as { addr?: unknown } | null)?.addr as string | undefined) ?? null;
  return {
    addr, ok: true,
    id: s.id instanceof Uint8Array ? idFromBytes(s.id) : null,
    ring: String(s.ring), serving: s.serving === true,
    predecessor: ref(s.predecessor),
    successors: Array.isArray(s.successors) ? s.successors.map(ref).filter((a): a is string => a !== null) : [],
    keys: typeof s.keys === 'number' ? s.keys : -1,
    lookups: typeof s.lookups === 'number' ? s.lookups : 0,
    hops: typeof s.hops === 'number' ? s.hops : 0,
    forwards: typeof s.forwards === 'number' ? s.forwards : 0,
    waiting: Array.isArray(s.waiting) ? (s.waiting as unknown[]).map(String) : [],
  };
}

/** The views sorted by ring id (the ring order), skipping nodes that did not answer. */
export function ringOrder(views: NodeView[]): NodeView[] {
  return views.filter((v) => v.ok && v.id !== null).sort((a, b) => (a.id! < b.id! ? -1 : a.id! > b.id! ? 1 : 0));
}

/** Why these views are not one settled ring (every node active, serving, pred/succ by id order), or null. */
export function unsettled(views: NodeView[]): string | null {
  const down = views.filter((v) => !v.ok);
  if (down.length > 0) return `not answering: ${down.map((v) => `${v.addr} (${v.error})`).join(', ')}`;
  const order = ringOrder(views);
  for (let i = 0; i < order.length; i++) {
    const v = order[i] as NodeView;
    const next = order[(i + 1) % order.length] as NodeView;
    const prev = order[(i - 1 + order.length) % order.length] as NodeView;
    if (v.ring !== 'active' || !v.serving) return `${v.addr} is ${v.ring}${v.serving ? '' : `, not serving (${(v.waiting ?? []).join('; ').slice(0, 600)})`}`;
    if (order.length > 1 && v.successors[0] !== next.addr) return `${v.addr}: successor ${v.successors[0]}, expected ${next.addr}`;
    // The whole successor list too: replicas go to its first R-1 entries, and a stale list sends copies astray.
    for (let j = 1; j < order.length; j++) {
      const want = (order[(i + j) % order.length] as NodeView).addr;
      if (v.successors[j - 1] !== want) return `${v.addr}: successor #${j} ${v.successors[j - 1] ?? 'missing'}, expected ${want}`;
    }
    if (order.length > 1 && v.predecessor !== prev.addr) return `${v.addr}: predecessor ${v.predecessor}, expected ${prev.addr}`;
  }
  return null;
}

/**
 * How many of `keys` each node should hold with replication factor R on the
 * ring these views form, once the data core's configurations match the ring
 * (docs/consistency.md): a key's range is served by the first node at or after
 * the range's start point and its R-1 successors.
 */
export function expectedCounts(views: NodeView[], keys: Buffer[], replicas: number): Map<string, number> {
  const order = ringOrder(views);
  const out = new Map(order.map((v) => [v.addr, 0]));
  const ids = order.map((v) => v.id as bigint);
  const shards = enclaveDataConfig.shards;
  for (const k of keys) {
    const start = shardStart(shardOf(k.toString('latin1'), shards), shards);
    let owner = ids.findIndex((id) => id >= start);
    if (owner === -1) owner = 0; // past the largest id: wraps to the smallest
    for (let j = 0; j < Math.min(replicas, order.length); j++) {
      const v = order[(owner + j) % order.length] as NodeView;
      out.set(v.addr, (out.get(v.addr) ?? 0) + 1);
    }
  }
  return out;
}

/** The address of the node that should own a key's range on the ring these views form (first at or after its start). */
export function rangeOwnerOf(views: NodeView[], key: Buffer): string {
  const order = ringOrder(views);
  const shards = enclaveDataConfig.shards;
  const start = shardStart(shardOf(key.toString('latin1'), shards), shards);
  return (order.find((v) => (v.id as bigint) >= start) ?? order[0])!.addr;
}

/** Compare nodes' key counts with the expected placement: exact, at least, or short (some copies missing). */
export function placementReport(views: NodeView[], expected: Map<string, number>): { exact: boolean; atLeast: boolean; lines: string[] } {
  let exact = true, atLeast = true;
  const lines: string[] = [];
  for (const v of ringOrder(views)) {
    const want = expected.get(v.addr) ?? 0;
    if (v.keys !== want) exact = false;
    if (v.keys < want) atLeast = false;
    lines.push(`${v.addr} id ${v.id!.toString(16).slice(0, 8)} keys ${v.keys} expected ${want}`);
  }
  return { exact, atLeast, lines };
}

export interface RingFixtureOptions {
  nodes: number;
  replicas: number;
  logger?: Logger;
  progress?: (line: string) => void;
  /** Sealed persistence (default true): a relaunched enclave keeps its identity and rejoins at its place. */
  seal?: boolean;
  /** Image settings over those the options imply. */
  imageSettings?: Partial<ImageSettings>;
}

export class RingFixture {
  readonly members: LocalNode[];
  /** Nodes started outside the ring (another image): stopped with the fixture, never used as members. */
  private readonly strangers: LocalNode[] = [];
  private readonly clients = new Map<string, Promise<EkvClient>>();
  private extra = 0;

  private constructor(
    readonly ring: LocalRing,
    readonly replicas: number,
    private readonly logger: Logger,
  ) {
    this.members = [...ring.nodes];
  }

  static async start(o: RingFixtureOptions): Promise<RingFixture> {
    const dir = shortTempDir('ekv-ring-');
    const logger = o.logger ?? testLogger();
    try {
      const ring = await startLocalRing({
        dir, nodes: o.nodes, replicas: o.replicas, logger, seal: o.seal ?? true,
        ...(o.imageSettings ? { imageSettings: o.imageSettings } : {}),
        ...(o.progress ? { progress: o.progress } : {}),
      });
      return new RingFixture(ring, o.replicas, logger);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  get dir(): string {
    return this.ring.dir;
  }

  /** The ring's emulated KMS (startLocalRing writes kms.json), for nodes added later. */
  get kms(): LocalKmsInfo | null {
    const p = join(this.dir, 'kms.json');
    return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as LocalKmsInfo) : null;
  }

  get trust(): TrustPolicy {
    return this.ring.cluster.trust;
  }

  /** Members run by another process (e.g. `ekv node --join`), by address. */
  readonly external: string[] = [];

  addrs(): string[] {
    return [...this.members.map((n) => n.addr), ...this.external];
  }

  byAddr(addr: string): LocalNode {
    const n = this.members.find((m) => m.addr === addr);
    if (!n) throw new Error(`no member at ${addr}`);
    return n;
  }

  /** The SDK client that sends everything to the node at `addr` (it forwards to the key's owner). */
  client(addr: string, trust: TrustPolicy = this.trust): Promise<EkvClient> {
    const key = `${addr} ${JSON.stringify(trust)}`;
    let c = this.clients.get(key);
    if (!c) this.clients.set(key, (c = connect({ nodes: [addr], trust, timeoutMs: clientTimeoutMs })));
    return c;
  }

  async status(addr: string, trust?: TrustPolicy): Promise<NodeView> {
    try {
      const c = await this.client(addr, trust);
      const s = await Promise.race([
        c.node(addr).call('status', {}),
        sleep(statusTimeoutMs).then(() => Promise.reject(new EkvError('TIMEOUT', 'status timed out'))),
      ]);
      return toView(addr, s);
    } catch (err) {
      const error = (err as { code?: string }).code ?? (err as Error).message;
      return { addr, ok: false, error, id: null, ring: '?', serving: false, predecessor: null, successors: [], keys: 0, lookups: 0, hops: 0, forwards: 0 };
    }
  }

  statusAll(): Promise<NodeView[]> {
    return Promise.all(this.addrs().map((a) => this.status(a)));
  }

  /** Wait until the members form one settled ring; returns their views. */
  waitSettled(timeoutMs: number): Promise<NodeView[]> {
    return waitFor('the ring to settle', timeoutMs, async () => {
      const views = await this.statusAll();
      return unsettled(views) ?? views;
    });
  }

  /**
   * Wait until every node holds at least the keys the placement gives it (and,
   * with `exact`, no more). Returns the views and the report either way; the
   * caller asserts.
   */
  async waitCopies(keys: Buffer[], timeoutMs: number, exact: boolean): Promise<{ views: NodeView[]; report: ReturnType<typeof placementReport> }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const views = await this.statusAll();
      const report = placementReport(views, expectedCounts(views, keys, this.replicas));
      const done = unsettled(views) === null && (exact ? report.exact : report.atLeast);
      if (done || Date.now() > deadline) return { views, report };
      await sleep(pollMs);
    }
  }

  /** kill -9 a member's enclave; LocalNode launches a new one (a new ring node) 500 ms later. */
  kill9(node: LocalNode): number {
    const pid = node.enclave?.pid;
    if (!pid) throw new Error(`${node.name} has no enclave`);
    process.kill(pid, 'SIGKILL');
    return pid;
  }

  /** Resolves once the node runs an enclave other than `oldPid` that answers. */
  waitRelaunched(node: LocalNode, oldPid: number, timeoutMs: number): Promise<number> {
    return waitFor(`${node.name} to relaunch its enclave`, timeoutMs, async () => {
      const pid = node.enclave?.pid;
      if (!pid || pid === oldPid) return 'not relaunched yet';
      const v = await this.status(node.addr);
      return v.ok ? pid : `new enclave ${pid} not answering: ${v.error}`;
    });
  }

  /**
   * A new node that joins through a live member, running the ring's image (or another: a join attempt that
   * must be refused). `seal` (default true) gives it the ring's KMS and a blob store; an unsealed image
   * needs neither.
   */
  async addNode(o: { imagePath?: string; member?: boolean; seal?: boolean } = {}): Promise<LocalNode> {
    const kms = (o.seal ?? true) ? this.kms : null;
    const name = `extra-${++this.extra}`;
    // A sealed node gets the ring's ring-secret ciphertext from its host, as `ekv node --join` gives it.
    if (kms) provideRingSecret(this.dir, join(this.dir, name, 'data'));
    const node: LocalNode = new LocalNode({
      // The default image stands for the ring's own (the variant built for the ring's options).
      name, dir: join(this.dir, name), imagePath: o.imagePath === undefined || o.imagePath === defaultImagePath ? this.ring.imagePath : o.imagePath, ca: this.ring.ca,
      listenPort: 0, httpPort: 0, logger: this.logger,
      enclaveEnv: ({ addr }) => ({
        EKV_JOIN: this.members.find((m) => m.addr !== addr && m.enclave !== null)?.addr ?? '',
        // Sealed like the ring's own nodes (the KMS releases keys only to the ring's image).
        ...(kms ? kmsEnv(kms) : {}),
      }),
      ...(kms ? { startBlobStore: localBlobStore(this.logger), imdsUrl: kms.imdsUrl } : {}),
    });
    const member = o.member ?? true;
    const list = member ? this.members : this.strangers;
    list.push(node);
    try {
      await node.start();
    } catch (err) {
      // LocalNode would keep relaunching an enclave that dies at start-up: stop it for good.
      list.splice(list.indexOf(node), 1);
      await node.stop().catch(() => undefined);
      throw err;
    }
    return node;
  }

  /** Graceful removal: SIGTERM to the enclave (it hands off its keys and leaves), and no relaunch. */
  async removeNode(node: LocalNode): Promise<void> {
    const i = this.members.indexOf(node);
    if (i < 0) throw new Error(`${node.name} is not a member`);
    this.members.splice(i, 1);
    await node.stop();
  }

  async stop(): Promise<void> {
    for (const c of this.clients.values()) await c.then((x) => x.close(), () => undefined);
    this.clients.clear();
    const added = [...this.strangers, ...this.members].filter((n) => !this.ring.nodes.includes(n));
    await Promise.all(added.map((n) => n.stop().catch(() => undefined)));
    await this.ring.stop(); // the original nodes (a removed one is already stopped; stopping it again is harmless)
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface WorkloadOptions {
  keys: string[];
  readers: number;
  /** Pause after a failed operation, so a dead node is not hammered. */
  backoffMs?: number;
}

/**
 * Writers and readers that run until stop(): one writer per key writing
 * `${key}#${seq}` sequentially, `readers` readers reading random keys, each
 * operation through the next member in turn (so some go to dead nodes, as a
 * real client's would). Everything is recorded in the history.
 */
export class Workload {
  private running = false;
  private loops: Promise<void>[] = [];
  private turn = 0;

  constructor(
    private readonly fx: RingFixture,
    readonly history: History,
    private readonly o: WorkloadOptions,
  ) {}

  start(): void {
    this.running = true;
    for (const key of this.o.keys) this.loops.push(this.writer(key));
    for (let i = 0; i < this.o.readers; i++) this.loops.push(this.reader(i));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    this.loops = [];
  }

  /** Read every key once through every member (after stop, on a settled ring): the final state, in the history. */
  async finalReads(): Promise<void> {
    for (const addr of this.fx.addrs()) {
      await Promise.all(this.o.keys.map((k) => this.get(k, addr)));
    }
  }

  private nextAddr(): string {
    const addrs = this.fx.addrs();
    return addrs[this.turn++ % addrs.length] as string;
  }

  private async writer(key: string): Promise<void> {
    for (let seq = 1; this.running; seq++) {
      const ok = await this.put(key, `${key}#${seq}`, this.nextAddr());
      if (!ok) await sleep(this.o.backoffMs ?? 100);
    }
  }

  private async reader(i: number): Promise<void> {
    for (let n = i; this.running; n++) {
      const key = this.o.keys[(n * 7919) % this.o.keys.length] as string;
      const ok = await this.get(key, this.nextAddr());
      if (!ok) await sleep(this.o.backoffMs ?? 100);
    }
  }

  private async put(key: string, value: string, addr: string): Promise<boolean> {
    const r = this.history.invoke(key, 'put', value, addr);
    try {
      const version = await (await this.fx.client(addr)).put(key, value);
      this.history.ok(r, { version });
      return true;
    } catch (err) {
      this.history.fail(r, err);
      return false;
    }
  }

  private async get(key: string, addr: string): Promise<boolean> {
    const r = this.history.invoke(key, 'get', null, addr);
    try {
      const g = await (await this.fx.client(addr)).getWithVersion(key);
      this.history.ok(r, { version: g.version, value: g.value.toString() });
      return true;
    } catch (err) {
      if (err instanceof EkvError && err.code === 'NOT_FOUND') {
        this.history.ok(r, { version: 0, value: null });
        return true;
      }
      this.history.fail(r, err);
      return false;
    }
  }
}

/** The keys among `candidates` that some node owns: helper for tests that place keys. */
export function ownedBy(views: NodeView[], addr: string, candidates: Buffer[]): Buffer[] {
  const order = ringOrder(views);
  const i = order.findIndex((v) => v.addr === addr);
  if (i < 0) return [];
  const prev = order[(i - 1 + order.length) % order.length] as NodeView;
  return candidates.filter((k) => inRange(keyId(k), { start: prev.id as bigint, end: order[i]!.id as bigint }));
}

/**
 * End a history: stop the workload, read every key's final state through every node (recorded as reads
 * like any other), and check the whole history. `summary` names the counts and the kinds of violation.
 */
export async function finishHistory(fx: RingFixture, history: History, work: Workload, keySets: string[][]) {
  await work.stop();
  for (const keys of keySets) await new Workload(fx, history, { keys, readers: 0 }).finalReads();
  const counts = history.counts();
  const violations = history.check();
  const kinds = new Map<string, number>();
  for (const v of violations) kinds.set(v.kind, (kinds.get(v.kind) ?? 0) + 1);
  return { counts, violations, summary: `${JSON.stringify(counts)} violations ${JSON.stringify([...kinds])}` };
}
