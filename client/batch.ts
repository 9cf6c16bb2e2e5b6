/**
 * mget / mput (issue 14; docs/scans.md): many gets or puts, one request per node.
 *
 * Each key runs through the SDK's own single-key path (routing, retries, the write session's (session, seq,
 * floor) reused on every retry, the rollback floor), with one difference: the requests that path sends are
 * handed to a batcher, which gathers those bound for the same node in the same event-loop turn into one
 * `mget` or `mput` request (at most `batchItemsMax` items and about one frame of bytes each) and hands each
 * item's answer back to its own call. So a batch is exactly N single operations that share requests: per-key
 * results, no atomicity, and a retried item is the same request to its range (no duplicate writes).
 */
import { frameBytesMax } from '../protocol/constants.ts';
import { EkvError, isEkvErrorCode } from '../protocol/errors.ts';
import type { RpcResult } from '../protocol/rpc.ts';
import type { Floor } from './floor.ts';
import type { Bytes, GetResult, PutOptions, Send } from './index.ts';
import type { NodeConnection } from './node-connection.ts';

/** Keys one mget or mput call may name (larger batches: call again). */
export const batchKeysMax = 10_000;
/** Items in one request (the enclave's bound, enclave/cluster/scan-ops.ts). */
export const batchItemsPerRequestMax = 256;
/** Bytes of keys and values in one mput request (a frame holds one full value, key and overhead). */
const requestBytesMax = frameBytesMax - 8 * 1024;
/** Per item: CBOR heads, session ids, ifVersion. */
const itemOverheadBytes = 64;

/** What client/index.ts hands to the scan and batch modules. */
export interface ClientPort {
  get(key: Bytes, send: Send): Promise<GetResult>;
  put(key: Bytes, value: Bytes, opts: PutOptions | undefined, send: Send): Promise<number>;
  /** A request to a range's owner (routed by the range's start), retried like a get; with the answering node's ring. */
  callRange(shard: number, op: string, args: Record<string, unknown>): Promise<{ r: RpcResult; ring: string }>;
  /** Opens the write sessions of these keys' ranges (errors are left to the puts). */
  prepareWrites(keys: Buffer[]): Promise<void>;
  shards(): number | null;
  learnShards(S: number): void;
  readonly floor: Floor | null;
}

export type MgetResult =
  | { readonly ok: true; readonly key: Buffer; readonly value: Buffer; readonly version: number }
  | { readonly ok: false; readonly key: Buffer; readonly error: EkvError };

export type MputResult =
  | { readonly ok: true; readonly key: Buffer; readonly version: number }
  | { readonly ok: false; readonly key: Buffer; readonly error: EkvError };

interface Item {
  readonly args: Record<string, unknown>;
  readonly bytes: number;
  readonly resolve: (r: RpcResult) => void;
  readonly reject: (e: unknown) => void;
}

/** Gathers get and put requests per node for one event-loop turn; anything else goes straight through. */
export class Batcher {
  private readonly queued = new Map<NodeConnection, { get: Item[]; put: Item[] }>();
  private scheduled = false;
  /** Requests sent (for tests and the CLI's --json). */
  requests = 0;

  readonly send: Send = (c, op, args) => {
    if (op !== 'get' && op !== 'put') return c.call(op, args);
    return new Promise<RpcResult>((resolve, reject) => {
      let q = this.queued.get(c);
      if (!q) {
        q = { get: [], put: [] };
        this.queued.set(c, q);
      }
      const bytes = itemOverheadBytes + (args.k as Uint8Array).length + (op === 'put' ? (args.v as Uint8Array).length : 0);
      q[op].push({ args, bytes, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  };

  private flush(): void {
    this.scheduled = false;
    const all = [...this.queued];
    this.queued.clear();
    for (const [c, q] of all) {
      for (const part of split(q.get)) this.sendBatch(c, 'mget', part);
      for (const part of split(q.put)) this.sendBatch(c, 'mput', part);
    }
  }

  private sendBatch(c: NodeConnection, op: 'mget' | 'mput', items: Item[]): void {
    this.requests++;
    const args = op === 'mget'
      ? { ks: items.map((x) => x.args.k) }
      : { b: items.map((x) => [x.args.k, x.args.v, x.args.s, x.args.iv ?? null, ...(x.args.t === undefined ? [] : [x.args.t])]) };
    c.call(op, args).then((r) => {
      const rs = r.r;
      // An mget answer may end early to fit a frame (at least one item): the rest are asked again (UNAVAILABLE is
      // retried by the single-key path). An mput answer is complete.
      if (!Array.isArray(rs) || rs.length > items.length || rs.length < (op === 'mget' ? 1 : items.length)) {
        for (const x of items) x.reject(new EkvError('PROTOCOL', `malformed ${op} answer`));
        return;
      }
      items.forEach((x, i) => {
        if (i >= rs.length) return x.reject(new EkvError('UNAVAILABLE', 'BATCH_FULL: not in this answer, asked again'));
        const a = rs[i] as Record<string, unknown> | null;
        if (a === null || typeof a !== 'object') return x.reject(new EkvError('PROTOCOL', `malformed ${op} item`));
        if (a.e === undefined) return x.resolve(a as RpcResult);
        const code = isEkvErrorCode(a.e) ? a.e : 'PROTOCOL';
        // As the RPC client reads a refusal (protocol/rpc.ts): n the version, t a CONFLICT's absentAt.
        const nat = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined);
        const version = nat(a.n);
        const absentAt = nat(a.t);
        x.reject(new EkvError(code, typeof a.m === 'string' ? a.m.slice(0, 500) : code, { ...(version === undefined ? {} : { version }), ...(absentAt === undefined ? {} : { absentAt }) }));
      });
    }, (err: unknown) => {
      for (const x of items) x.reject(err);
    });
  }
}

/** Parts of at most batchItemsPerRequestMax items and requestBytesMax bytes (an item alone may be a part). */
function split(items: Item[]): Item[][] {
  const parts: Item[][] = [];
  let cur: Item[] = [];
  let bytes = 0;
  for (const x of items) {
    if (cur.length > 0 && (cur.length >= batchItemsPerRequestMax || bytes + x.bytes > requestBytesMax)) {
      parts.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(x);
    bytes += x.bytes;
  }
  if (cur.length > 0) parts.push(cur);
  return parts;
}

function checkCount(n: number): void {
  if (n > batchKeysMax) throw new EkvError('BAD_REQUEST', `BATCH_TOO_LARGE: ${n} keys exceed ${batchKeysMax} per call`);
}

function asError(err: unknown): EkvError {
  return err instanceof EkvError ? err : new EkvError('INTERNAL', (err as Error)?.message ?? String(err));
}

function toBuffer(x: Bytes): Buffer {
  return typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x.buffer, x.byteOffset, x.length);
}

export async function mget(port: ClientPort, keys: readonly Bytes[]): Promise<MgetResult[]> {
  checkCount(keys.length);
  const b = new Batcher();
  return Promise.all(keys.map(async (k): Promise<MgetResult> => {
    const key = toBuffer(k);
    try {
      const r = await port.get(key, b.send);
      return { ok: true, key, value: r.value, version: r.version };
    } catch (err) {
      return { ok: false, key, error: asError(err) };
    }
  }));
}

export async function mput(port: ClientPort, entries: ReadonlyArray<readonly [Bytes, Bytes] | { key: Bytes; value: Bytes; ifVersion?: number; ttlMs?: number }>): Promise<MputResult[]> {
  checkCount(entries.length);
  const b = new Batcher();
  const items = entries.map((e) => {
    const [k, v, o] = Array.isArray(e) ? [e[0], e[1], undefined] : [(e as { key: Bytes }).key, (e as { value: Bytes }).value, e as { ifVersion?: number; ttlMs?: number }];
    return { key: toBuffer(k as Bytes), v, o };
  });
  await port.prepareWrites(items.map((x) => x.key).filter((k) => k.length > 0));
  return Promise.all(items.map(async ({ key, v, o }): Promise<MputResult> => {
    try {
      const opts = { ...(o?.ifVersion === undefined ? {} : { ifVersion: o.ifVersion }), ...(o?.ttlMs === undefined ? {} : { ttlMs: o.ttlMs }) };
      const version = await port.put(key, v as Bytes, opts, b.send);
      return { ok: true, key, version };
    } catch (err) {
      return { ok: false, key, error: asError(err) };
    }
  }));
}
