// An in-process ring of DataStores (enclave/cluster/data-store.ts + ops.ts) for tests of the wired data path:
// every peer call goes through the callee's op catalogue, every request and answer CBOR-encoded as on the
// wire, the sender named by its (fake) attested key. The host's powers over the network: cut a node off, hold
// a node's data messages unanswered, lose the answer of one peer call after it was handled. The access check
// is a stub that refuses the principals in `forbid`. Real timers, short settings (10 ms ticks).
// (Factored from test/review-wire.test.ts; used by test/data-store.test.ts, test/review-3.test.ts and others.)
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { decodeCbor, encodeCbor } from '../../protocol/cbor.ts';
import { EkvError } from '../../protocol/errors.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import { DataStore } from '../../enclave/cluster/data-store.ts';
import { catalogue, dispatch } from '../../enclave/cluster/ops.ts';
import type { PeerPool } from '../../enclave/cluster/peers.ts';
import type { RingDriver } from '../../enclave/cluster/ring-driver.ts';
import { type DataConfig, type DataLog, type LogRecord, shardOf } from '../../enclave/data/index.ts';
import { nodeIdFromPublicKey, type NodeRef } from '../../enclave/ring/index.ts';
import type { Handler } from '../../enclave/server.ts';
import type { AccessCheck } from '../../enclave/access/index.ts';
import type { ScanAccess } from '../../enclave/cluster/scan-ops.ts';

export const fast: Partial<DataConfig> = {
  leaseTicks: 150, leaseMarginTicks: 2, renewTicks: 20, heartbeatTicks: 5, suspectTicks: 30, retryTicks: 10,
  proposeTimeoutTicks: 100, backoffTicksMax: 10, shards: 4,
};

export class MemLog implements DataLog {
  records: LogRecord[] = [];
  async append(rs: readonly LogRecord[]): Promise<void> {
    await Promise.resolve();
    this.records.push(...rs);
  }
  async load(): Promise<LogRecord[]> {
    return [...this.records];
  }
}

export interface NetNode {
  key: Buffer;
  ref: NodeRef;
  store: DataStore;
  handler: Handler;
}

export class DataNet {
  readonly nodes: NetNode[] = [];
  readonly cut = new Set<string>();
  /** Addresses whose data messages from `holdSender` are held (never answered) until released; bytes of its 'dm' calls per address. */
  readonly hold = new Set<string>();
  holdSender = 'n0';
  readonly held: Array<() => void> = [];
  readonly dmBytes = new Map<string, number>();
  /** 'dm' batches sent, per sender address, as calls and as one-way requests (PeerPool.notify). */
  readonly dmCalls = new Map<string, number>();
  readonly dmNotifies = new Map<string, number>();
  /** Unsent socket bytes the fake pool reports per address (PeerPool.queuedBytes). */
  readonly queued = new Map<string, number>();
  /** Principal keys (hex) the access stub refuses every operation to. */
  readonly forbid = new Set<string>();
  /**
   * Principal keys (hex) with the operator right (status with counts, metrics: enclave/cluster/status-view.ts),
   * as in a closed ring whose image names them; `allOperators`: everyone, as in an open ring.
   */
  readonly operators = new Set<string>();
  allOperators = false;
  /** The next peer call of this op is delivered and handled, then its answer is lost once `gate` resolves. */
  loseAnswer: { op: string; gate: Promise<void> } | null = null;
  shards = fast.shards as number;
  /** The stores' logger (default silent); review-15 F2 gives them a debug-level one to read what they log. */
  logger: pino.Logger = pino({ level: 'silent' });
  private readonly byAddr = new Map<string, NetNode>();

  /**
   * `access`: the access check (and scan access) the op catalogue gets; default, a stub that refuses the
   * principals in `forbid`.
   */
  async start(n: number, config: Partial<DataConfig> = fast, access?: AccessCheck & Partial<ScanAccess>): Promise<void> {
    this.shards = config.shards ?? 64;
    const keys = Array.from({ length: n }, () => randomBytes(32));
    const refs = keys.map((k, i) => ({ id: nodeIdFromPublicKey(k), addr: `n${i}` }));
    for (let i = 0; i < n; i++) {
      const me = refs[i] as NodeRef;
      const key = keys[i] as Buffer;
      const call = async (addr: string, op: string, args: Record<string, unknown>, _t: number, expectId?: bigint): Promise<RpcResult> => {
          if (op === 'dm' && me.addr === this.holdSender) this.dmBytes.set(addr, (this.dmBytes.get(addr) ?? 0) + (args.m as Uint8Array).length);
          if (op === 'dm' && me.addr === this.holdSender && this.hold.has(addr)) await new Promise<void>((r) => this.held.push(r));
          const to = this.byAddr.get(addr);
          if (!to || this.cut.has(addr) || this.cut.has(me.addr)) throw new EkvError('UNAVAILABLE', 'cut off');
          if (expectId !== undefined && expectId !== to.ref.id) throw new EkvError('UNAVAILABLE', 'wrong node');
          await new Promise((r) => setImmediate(r));
          const req = decodeCbor(encodeCbor({ ...args, i: 1, o: op }), 1 << 22) as Record<string, unknown>;
          const res = await to.handler(op, req, { peer: { key } as never, principal: null });
          const lose = this.loseAnswer;
          if (lose && lose.op === op) {
            this.loseAnswer = null;
            await lose.gate;
            throw new EkvError('UNAVAILABLE', 'answer lost');
          }
          return decodeCbor(encodeCbor(res), 1 << 22) as RpcResult;
      };
      const peers = {
        queuedBytes: (addr: string) => this.queued.get(addr) ?? 0,
        queuedBytesTotal: () => [...this.queued.values()].reduce((a, b) => a + b, 0),
        call: (addr: string, op: string, args: Record<string, unknown>, t: number, expectId?: bigint): Promise<RpcResult> => {
          if (op === 'dm') this.dmCalls.set(me.addr, (this.dmCalls.get(me.addr) ?? 0) + 1);
          return call(addr, op, args, t, expectId);
        },
        // One-way (PeerPool.notify): the same delivery, its answer and failures dropped.
        notify: (addr: string, op: string, args: Record<string, unknown>, expectId: bigint): boolean => {
          if (op === 'dm') this.dmNotifies.set(me.addr, (this.dmNotifies.get(me.addr) ?? 0) + 1);
          void call(addr, op, args, 0, expectId).catch(() => undefined);
          return true;
        },
      } as unknown as PeerPool;
      // The Chord ring's view: every other node (the directory the data core is fed from).
      const ring = { core: { predecessor: null, successors: refs.filter((r) => r !== me), fingers: [] } } as unknown as RingDriver;
      const store = new DataStore({
        self: me, peers, ring, log: new MemLog(), founded: i === 0, replicas: 3, minMembers: 3, config,
        logger: this.logger,
      });
      const ops = catalogue({
        data: store, ring, status: () => store.status(), metrics: () => ({ m: { v: 1, at: 0, f: [] } }),
        operator: (p) => this.allOperators || (p !== null && this.operators.has(p.toString('hex'))),
        access: access ? Object.assign(Object.create(access) as typeof access, { handle: async () => ({}) }) : {
          check: (_op, _key, principal) => {
            if (principal && this.forbid.has(principal.toString('hex'))) throw new EkvError('FORBIDDEN', 'access denied');
          },
          handle: async () => ({}),
        },
      });
      const node = { key, ref: me, store, handler: dispatch(ops) };
      this.nodes.push(node);
      this.byAddr.set(me.addr, node);
    }
    for (const x of this.nodes) await x.store.start();
  }

  stop(): void {
    for (const x of this.nodes) x.store.stop();
  }

  async until(what: string, ms: number, f: () => boolean): Promise<void> {
    const end = Date.now() + ms;
    while (!f()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Every range has R members and an active owner, by every node's view. */
  async formed(ms = 15_000): Promise<void> {
    await this.until('every range to have 3 members and an active owner', ms, () => this.nodes.every((x) => x.store.ready));
  }

  /** A client request through node `at` (as the SDK sends it: CBOR, the op catalogue), with a proven principal key or none. */
  async call(at: NetNode, op: string, args: Record<string, unknown>, principal: Buffer | null = null): Promise<RpcResult> {
    const req = decodeCbor(encodeCbor({ ...args, i: 1, o: op }), 1 << 22) as Record<string, unknown>;
    return at.handler(op, req, { peer: null, principal });
  }

  /** The node that is the key's range's active owner now. */
  ownerOf(key: string): NetNode {
    const shard = shardOf(key, this.shards);
    const o = this.nodes.find((x) => x.store.driver.node?.isActiveOwner(shard));
    if (!o) throw new Error('no active owner');
    return o;
  }

  /** A key of the form `${prefix}-${i}` in the same range as `key`. */
  sameShard(key: Buffer, prefix: string): Buffer {
    const want = shardOf(key.toString('latin1'), this.shards);
    for (let i = 0; ; i++) {
      const k = `${prefix}-${i}`;
      if (shardOf(k, this.shards) === want) return Buffer.from(k);
    }
  }
}
