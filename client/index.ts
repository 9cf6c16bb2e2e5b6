/**
 * The enclave-kv SDK.
 *
 *   const kv = await connect({ nodes: ['10.0.0.5:7000'], trust: { pcrs: { 0: '<PCR0 hex>' } } });
 *   // or: connect({ cluster: './cluster.json', trust }); a local `ekv up` ring: connect({ cluster, trustClusterFile: true })
 *   await kv.put('k', 'v'); const v = await kv.get('k'); await kv.close();
 *
 * Before its first request to a node the client verifies that node's
 * attestation document against the trust policy and refuses the node with
 * EkvError('UNATTESTED') otherwise; every answer then arrives over the
 * channel bound to that document.
 */
import { createHash, randomBytes } from 'node:crypto';
import { keyBytesMax, valueBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import type { PrincipalSigner } from '../protocol/handshake.ts';
import { AccessApi } from './acl.ts';
import { Floor, noRing, type FloorSnapshot } from './floor.ts';
import { loadCluster, type ClusterFile } from './cluster.ts';
import { NodeConnection } from './node-connection.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import { checkTrustPolicy, documentVerifier, resolveTrust, type ResolvedTrust, type TrustPolicy } from './trust.ts';

export { EkvError } from '../protocol/errors.ts';
export type { EkvErrorCode } from '../protocol/errors.ts';
export type { ResolvedTrust, TrustPolicy, TrustSource } from './trust.ts';
export type { ClusterFile } from './cluster.ts';
export { AccessApi, type AclView, type GroupView } from './acl.ts';
export { Floor, floorKeysMax, type StaleReason } from './floor.ts';

export type Bytes = Uint8Array | string;

/**
 * How the client picks the node for a key:
 * - 'cached' (default): the owner by the ring view this client has seen (the identities of the nodes it
 *   verified); a stale view costs a forward inside the ring, never a wrong answer.
 * - 'iterative': walk the ring one verified node at a time ('route' steps) to the owner, checking that each
 *   node's attested identity hashes to the ring id its predecessor named.
 * - 'any': a node chosen by hashing the key over the node list; the ring forwards (recursive lookup).
 */
export type Routing = 'cached' | 'iterative' | 'any';

export interface ConnectOptions {
  routing?: Routing;
  /** A cluster file path, or its parsed contents. */
  cluster?: string | ClusterFile;
  /** Node addresses (host:port), with `trust`. */
  nodes?: string[];
  /** The trust policy. When given it is the whole policy: a cluster file's trust section is then ignored. */
  trust?: TrustPolicy;
  /**
   * Use the cluster file's trust section (roots, PCRs, allowAnyImage, allowDebug) as the policy. Only for a
   * file you trust as much as your own code (the one your own `ekv up` wrote): whoever writes it chooses
   * which enclaves you talk to. Without it (and without `trust`), only the file's addresses are used.
   */
  trustClusterFile?: boolean;
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
  /** A principal to prove in every handshake (access control). */
  identity?: PrincipalSigner;
  /**
   * Rollback and fork detection (client/floor.ts, docs/recovery.md): the client refuses with STALE any answer
   * older than what it has seen of that key in that ring. `floorFile` keeps that floor across processes (read
   * at connect, written atomically by close()); `floor: false` switches the check off.
   */
  floorFile?: string;
  floor?: boolean;
}

export interface GetResult {
  value: Buffer;
  version: number;
}

/** Options of put and delete. */
export interface WriteOptions {
  /**
   * Compare-and-set: write only if the key's current version is this one (0: only if the key has no
   * value). Otherwise the call rejects with EkvError('CONFLICT') whose `version` is the current one.
   */
  ifVersion?: number;
}

export interface DeleteResult {
  /** Whether the key had a value (false: nothing to delete, which is not an error). */
  deleted: boolean;
  /** The key's version after the call: the delete's own version, or 0 when there was nothing to delete. */
  version: number;
}

/** The random session part of every request id this client sends (see requestId). */
export const sessionIdBytes = 16;

function toBytes(x: Bytes): Buffer {
  return typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x.buffer, x.byteOffset, x.length);
}

/** The enclave enforces these too; checking here keeps one bad request from costing the connection. */
function checkedKey(x: Bytes): Buffer {
  const k = toBytes(x);
  if (k.length === 0) throw new EkvError('BAD_REQUEST', 'key must not be empty');
  if (k.length > keyBytesMax) throw new EkvError('KEY_TOO_LARGE', `key of ${k.length} bytes exceeds ${keyBytesMax}`);
  return k;
}

function checkedIfVersion(o: WriteOptions | undefined): { iv?: number } {
  const v = o?.ifVersion;
  if (v === undefined) return {};
  if (!Number.isSafeInteger(v) || v < 0) throw new EkvError('BAD_REQUEST', 'ifVersion must be a non-negative integer');
  return { iv: v };
}

function checkedValue(x: Bytes): Buffer {
  const v = toBytes(x);
  if (v.length > valueBytesMax) throw new EkvError('VALUE_TOO_LARGE', `value of ${v.length} bytes exceeds ${valueBytesMax}`);
  return v;
}

/** The node whose answer (or refusal) an operation returns: its ring id keys the floor. */
interface Via {
  conn?: NodeConnection;
}

const emptySnapshot: FloorSnapshot = new Map();

function ringOf(via: Via): string {
  return via.conn?.ringId?.toString('hex') ?? noRing;
}

export const iterativeStepsMax = 32;
const ringIdMask = (1n << 256n) - 1n;
export const knownNodesMax = 4096;

export class EkvClient {
  private readonly conns: NodeConnection[];
  private readonly byAddr = new Map<string, NodeConnection>();
  private readonly routing: Routing;
  private readonly makeConn: (addr: string) => NodeConnection;
  /** The last route taken: hops walked (iterative) and the node asked. */
  lastRoute: { addr: string; steps: number } | null = null;
  /** Namespaces, ACLs and groups (client/acl.ts): signed with `identity`. */
  readonly acl: AccessApi;
  /**
   * Every write carries a request id, [session, seq]: this client's random session id and a sequence
   * number per write, the same on every retry of that write (on this node, on another, or forwarded
   * inside the ring), so that the ring applies it once and a retry returns the first outcome.
   */
  private readonly session = randomBytes(sessionIdBytes);
  private seq = 0;

  /** What this client has seen (null: the check is off). */
  readonly floor: Floor | null;

  constructor(addrs: string[], trust: TrustPolicy, opts: { timeoutMs: number; identity?: PrincipalSigner; routing?: Routing; floor?: Floor | null }) {
    if (addrs.length === 0) throw new EkvError('BAD_REQUEST', 'no nodes to connect to');
    checkTrustPolicy(trust);
    const verify = documentVerifier(trust);
    const connOpts = {
      timeoutMs: opts.timeoutMs, ...(opts.identity ? { principal: opts.identity } : {}), ...(trust.now ? { now: trust.now } : {}),
      ...(trust.ringId ? { ringId: trust.ringId } : {}),
    };
    this.makeConn = (a) => new NodeConnection(a, verify, connOpts);
    this.conns = addrs.map((a) => this.makeConn(a));
    for (const c of this.conns) this.byAddr.set(c.addr, c);
    this.routing = opts.routing ?? 'cached';
    this.floor = opts.floor === undefined ? new Floor() : opts.floor;
    this.acl = new AccessApi((key, op, args) => this.callRouted(key, op, args), opts.identity ?? null);
  }

  /** Verify every node now (connect eagerly); rejects with the first refusal. */
  async verifyAll(): Promise<void> {
    await Promise.all(this.conns.map((c) => c.ensure()));
  }

  async get(key: Bytes): Promise<Buffer> {
    return (await this.getWithVersion(key)).value;
  }

  async getWithVersion(key: Bytes): Promise<GetResult> {
    const k = checkedKey(key);
    const before = this.floorBefore(k);
    const via: Via = {};
    let r: RpcResult;
    try {
      r = await this.callRouted(k, 'get', { k }, via);
    } catch (err) {
      // NOT_FOUND carries the version of the key's delete (0: never written): a read of "no value".
      if (this.floor && err instanceof EkvError && err.code === 'NOT_FOUND') this.floor.checkRead(ringOf(via), k, before, err.version, null);
      throw err;
    }
    if (!(r.v instanceof Uint8Array) || typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed get answer');
    this.floorAfter(via, r, (f, ring) => f.checkRead(ring, k, before, r.n as number, r.v as Uint8Array));
    return { value: Buffer.from(r.v), version: r.n };
  }

  /**
   * Store a value; resolves with the key's new version once the write is acknowledged (durable on
   * every holder). `{ ifVersion }` makes it a compare-and-set. A rejection with UNAVAILABLE, TIMEOUT,
   * CLOSED or EXPIRED leaves the outcome unknown (the write may have taken or still take effect, once);
   * CONFLICT, FORBIDDEN and the other refusals mean it was not applied. STALE: the node acknowledged it at a
   * version at or below one this client has seen (a rolled-back or forked ring took it).
   */
  async put(key: Bytes, value: Bytes, opts?: WriteOptions): Promise<number> {
    const k = checkedKey(key);
    const v = checkedValue(value);
    const before = this.floorBefore(k);
    const via: Via = {};
    const r = await this.callRouted(k, 'put', { k, v, ...checkedIfVersion(opts), r: this.requestId() }, via).catch((err: unknown) => this.floorOnError(err, via, before));
    if (typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed put answer');
    this.floorAfter(via, r, (f, ring) => f.checkWrite(ring, k, before, r.n as number, v));
    return r.n;
  }

  /** Delete a key; a key without a value is not an error (`deleted: false`). `{ ifVersion }` as for put. */
  async delete(key: Bytes, opts?: WriteOptions): Promise<DeleteResult> {
    const k = checkedKey(key);
    const before = this.floorBefore(k);
    const via: Via = {};
    const r = await this.callRouted(k, 'del', { k, ...checkedIfVersion(opts), r: this.requestId() }, via).catch((err: unknown) => this.floorOnError(err, via, before));
    if (typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed delete answer');
    const n = r.n;
    // A delete of a key without a value answers version 0 whatever its history: nothing to check.
    this.floorAfter(via, r, (f, ring) => (r.d === true ? f.checkWrite(ring, k, before, n, null) : undefined));
    return { deleted: r.d === true, version: n };
  }

  // ROLLBACK-FLOOR HOOKS (issue 12 section 3): the floor is taken when an operation is sent and checked
  // against the answer of the node that gave it (its ring id); a STALE answer is thrown, never returned.
  private floorBefore(k: Buffer): FloorSnapshot {
    return this.floor ? this.floor.snapshot(k) : emptySnapshot;
  }

  private floorAfter(via: Via, r: RpcResult, check: (f: Floor, ring: string) => void): void {
    if (!this.floor) return;
    const ring = ringOf(via);
    this.floor.checkGeneration(ring, r.g);
    check(this.floor, ring);
  }

  private floorOnError(err: unknown, via: Via, before: FloorSnapshot): never {
    // A CONFLICT names the key's current version: not below what this client has seen. (0 means "no value",
    // which a delete after what this client saw also gives: not comparable.)
    if (this.floor && err instanceof EkvError && err.code === 'CONFLICT' && err.version !== undefined && err.version > 0) {
      this.floor.checkVersion(ringOf(via), before, err.version);
    }
    throw err;
  }

  /** Write the floor to its file now (close() does too). */
  saveFloor(): void {
    this.floor?.save();
  }

  /** A new request id (a write's; its retries reuse it). */
  private requestId(): [Buffer, number] {
    return [this.session, ++this.seq];
  }

  /** The connection to one node by address (for attestation inspection and tests). */
  node(addr: string): NodeConnection {
    return this.connection(addr);
  }

  async close(): Promise<void> {
    for (const c of this.byAddr.values()) c.close();
    this.floor?.save();
  }

  /**
   * Send to the routed node; if it cannot be reached (it left, or died), try the other configured nodes,
   * which forward inside the ring. A refusal (UNATTESTED, TAMPERED, FORBIDDEN, ...) is never retried elsewhere.
   * A write (it carries a request id, `args.r`) is also retried after a TIMEOUT: the id makes it apply once.
   * A write sent again is marked as a retry (`r: [session, seq, true]`): a node that does not know its id
   * answers EXPIRED (outcome unknown) rather than apply it, since the first attempt may have landed where
   * that node cannot see it (docs/durability.md).
   */
  private async callRouted(key: Buffer, op: string, args: Record<string, unknown>, via: Via = {}) {
    const retry = (e: unknown): boolean =>
      e instanceof EkvError && (e.code === 'UNAVAILABLE' || e.code === 'CLOSED' || (e.code === 'TIMEOUT' && args.r !== undefined));
    let first: NodeConnection | null = null;
    let sent = false;
    try {
      first = await this.route(key);
      sent = true;
      via.conn = first;
      return await first.call(op, args);
    } catch (err) {
      if (!retry(err)) throw err;
      for (const c of this.conns) {
        if (c === first) continue;
        const again = sent && Array.isArray(args.r) ? { ...args, r: [...(args.r as unknown[]).slice(0, 2), true] } : args;
        try {
          sent = true;
          via.conn = c;
          return await c.call(op, again);
        } catch (e) {
          if (!retry(e)) throw e;
        }
      }
      throw err;
    }
  }

  private async route(key: Buffer): Promise<NodeConnection> {
    if (this.byAddr.size === 1 && this.routing !== 'iterative') return this.conns[0] as NodeConnection; // nothing to choose
    const h = createHash('sha256').update(key).digest();
    const any = this.conns[h.readUInt32BE(0) % this.conns.length] as NodeConnection;
    if (this.routing === 'iterative') return this.walk(key, any);
    if (this.routing === 'cached') return this.cachedOwner(h) ?? any;
    return any;
  }

  private readonly ids = new WeakMap<Buffer, bigint>();

  /** A connected node's ring id (SHA-256 of its attested identity key), computed once per identity. */
  private ringId(c: NodeConnection): bigint | null {
    const key = c.identityKey;
    if (!key) return null;
    let id = this.ids.get(key);
    if (id === undefined) {
      id = BigInt('0x' + createHash('sha256').update(key).digest('hex'));
      this.ids.set(key, id);
    }
    return id;
  }

  /** The verified node whose ring id is the first at or after the key's id, among the nodes this client knows. */
  private cachedOwner(keyHash: Buffer): NodeConnection | null {
    let best: { d: bigint; c: NodeConnection } | null = null;
    const k = BigInt('0x' + keyHash.toString('hex'));
    for (const c of this.byAddr.values()) {
      const id = this.ringId(c);
      if (id === null) continue;
      const d = (id - k) & ringIdMask; // clockwise distance from the key to the node
      if (!best || d < best.d) best = { d, c };
    }
    return best?.c ?? null;
  }

  /** Iterative lookup: ask each node for the next hop; every hop is a node this client verified itself. */
  private async walk(key: Buffer, start: NodeConnection): Promise<NodeConnection> {
    let at = start;
    for (let step = 0; step < iterativeStepsMax; step++) {
      const r = await at.call('route', { k: key });
      if (r.r === 'owner') {
        this.lastRoute = { addr: at.addr, steps: step };
        return at;
      }
      if (r.r !== 'next' || typeof r.addr !== 'string' || !(r.id instanceof Uint8Array) || r.id.length !== 32) {
        throw new EkvError('PROTOCOL', 'malformed route answer');
      }
      const next = this.connection(r.addr);
      await next.ensure();
      if (this.ringId(next) !== BigInt('0x' + Buffer.from(r.id).toString('hex'))) {
        next.close();
        throw new EkvError('UNATTESTED', `the node at ${r.addr} is not the ring member ${Buffer.from(r.id).toString('hex').slice(0, 12)}`, { reason: 'WRONG_NODE' });
      }
      at = next;
    }
    throw new EkvError('UNAVAILABLE', `no owner within ${iterativeStepsMax} steps`);
  }

  private connection(addr: string): NodeConnection {
    const known = this.byAddr.get(addr);
    if (known) return known;
    if (this.byAddr.size >= knownNodesMax) throw new EkvError('UNAVAILABLE', 'too many nodes');
    const c = this.makeConn(addr);
    this.byAddr.set(addr, c);
    return c;
  }
}

/**
 * The addresses and the trust policy connect() would use, and where each part of the policy came from
 * (`ekv status` prints it). Addresses come from the cluster file or `nodes`; the policy is never a merge
 * of the caller's and the file's (client/trust.ts resolveTrust).
 */
export function resolveConnect(opts: ConnectOptions): { addrs: string[]; trust: ResolvedTrust } {
  if (opts.cluster !== undefined) {
    const c = typeof opts.cluster === 'string' ? loadCluster(opts.cluster) : opts.cluster;
    const trust = resolveTrust({ trust: opts.trust, fileTrust: c.trust, trustClusterFile: opts.trustClusterFile });
    return { addrs: c.nodes.map((n) => n.addr), trust };
  }
  if (opts.nodes) return { addrs: opts.nodes, trust: resolveTrust({ trust: opts.trust, trustClusterFile: opts.trustClusterFile }) };
  throw new EkvError('BAD_REQUEST', 'connect: give either cluster or nodes');
}

export async function connect(opts: ConnectOptions): Promise<EkvClient> {
  const { addrs, trust } = resolveConnect(opts);
  const floor = opts.floor === false ? null : new Floor(opts.floorFile ? { file: opts.floorFile } : {});
  return new EkvClient(addrs, trust.policy, {
    floor,
    timeoutMs: opts.timeoutMs ?? 10_000,
    ...(opts.identity ? { identity: opts.identity } : {}),
    ...(opts.routing ? { routing: opts.routing } : {}),
  });
}
