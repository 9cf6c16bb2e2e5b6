/**
 * The enclave-kv SDK.
 *
 *   const kv = await connect({ cluster: './cluster.json' });
 *   await kv.put('k', 'v'); const v = await kv.get('k'); await kv.close();
 *
 * Before its first request to a node the client verifies that node's
 * attestation document against the trust policy and refuses the node with
 * EkvError('UNATTESTED') otherwise; every answer then arrives over the
 * channel bound to that document.
 */
import { createHash } from 'node:crypto';
import { EkvError } from '../protocol/errors.ts';
import type { PrincipalSigner } from '../protocol/handshake.ts';
import { loadCluster, type ClusterFile } from './cluster.ts';
import { NodeConnection } from './node-connection.ts';
import { documentVerifier, type TrustPolicy } from './trust.ts';

export { EkvError } from '../protocol/errors.ts';
export type { EkvErrorCode } from '../protocol/errors.ts';
export type { TrustPolicy } from './trust.ts';
export type { ClusterFile } from './cluster.ts';

export type Bytes = Uint8Array | string;

export interface ConnectOptions {
  /** A cluster file path, or its parsed contents. */
  cluster?: string | ClusterFile;
  /** Node addresses (host:port), with `trust`. */
  nodes?: string[];
  trust?: TrustPolicy;
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
  /** A principal to prove in every handshake (access control). */
  identity?: PrincipalSigner;
}

export interface GetResult {
  value: Buffer;
  version: number;
}

function toBytes(x: Bytes): Buffer {
  return typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x.buffer, x.byteOffset, x.length);
}

export class EkvClient {
  private readonly conns: NodeConnection[];

  constructor(addrs: string[], trust: TrustPolicy, opts: { timeoutMs: number; identity?: PrincipalSigner }) {
    if (addrs.length === 0) throw new EkvError('BAD_REQUEST', 'no nodes to connect to');
    const verify = documentVerifier(trust);
    const connOpts = { timeoutMs: opts.timeoutMs, ...(opts.identity ? { principal: opts.identity } : {}), ...(trust.now ? { now: trust.now } : {}) };
    this.conns = addrs.map((a) => new NodeConnection(a, verify, connOpts));
  }

  /** Verify every node now (connect eagerly); rejects with the first refusal. */
  async verifyAll(): Promise<void> {
    await Promise.all(this.conns.map((c) => c.ensure()));
  }

  async get(key: Bytes): Promise<Buffer> {
    return (await this.getWithVersion(key)).value;
  }

  async getWithVersion(key: Bytes): Promise<GetResult> {
    const k = toBytes(key);
    const r = await this.route(k).call('get', { k });
    if (!(r.v instanceof Uint8Array) || typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed get answer');
    return { value: Buffer.from(r.v), version: r.n };
  }

  /** Store a value; resolves with the key's new version once the write is acknowledged. */
  async put(key: Bytes, value: Bytes): Promise<number> {
    const k = toBytes(key);
    const r = await this.route(k).call('put', { k, v: toBytes(value) });
    if (typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed put answer');
    return r.n;
  }

  async delete(key: Bytes): Promise<number> {
    const k = toBytes(key);
    const r = await this.route(k).call('del', { k });
    if (typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed delete answer');
    return r.n;
  }

  /** The connection to one node by address (for attestation inspection and tests). */
  node(addr: string): NodeConnection {
    const c = this.conns.find((x) => x.addr === addr);
    if (!c) throw new EkvError('BAD_REQUEST', `unknown node ${addr}`);
    return c;
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.close();
  }

  private route(key: Buffer): NodeConnection {
    const h = createHash('sha256').update(key).digest();
    return this.conns[h.readUInt32BE(0) % this.conns.length] as NodeConnection;
  }
}

export async function connect(opts: ConnectOptions): Promise<EkvClient> {
  let addrs: string[];
  let trust: TrustPolicy;
  if (opts.cluster !== undefined) {
    const c = typeof opts.cluster === 'string' ? loadCluster(opts.cluster) : opts.cluster;
    addrs = c.nodes.map((n) => n.addr);
    trust = { ...c.trust, ...(opts.trust ?? {}) };
  } else if (opts.nodes) {
    addrs = opts.nodes;
    trust = opts.trust ?? {};
  } else {
    throw new EkvError('BAD_REQUEST', 'connect: give either cluster or nodes');
  }
  return new EkvClient(addrs, trust, { timeoutMs: opts.timeoutMs ?? 10_000, ...(opts.identity ? { identity: opts.identity } : {}) });
}
