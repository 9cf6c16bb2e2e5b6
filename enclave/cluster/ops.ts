/**
 * The one catalogue of the enclave's RPC operations: for each, who may call it, its decoder (every field
 * validated with the limits of protocol/constants.ts, in op-wire.ts or the access module's docs.ts) and its
 * handler. The enclave's dispatch is built from it (`dispatch`), so an operation cannot be reachable without
 * a caller rule and a decoder.
 *
 * Callers: 'client' (any attested session: clients, and peers acting for one), 'peer' (attested peer
 * enclaves of this ring only).
 */
import { EkvError } from '../../protocol/errors.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import { accessClientOps, accessPeerOps, type AccessCheck, type AccessService } from '../access/index.ts';
import type { CallerContext, Handler } from '../server.ts';
import { type DataStore, resultToWire, toRpcResult } from './data-store.ts';
import { decodeClientKey, decodeDataOp, decodeForward, type DataOpName, principalTag } from './op-wire.ts';
import { scanAccessOf, scanOps } from './scan-ops.ts';
import { type OperatorCheck, publicStatus } from './status-view.ts';

async function checkOpen(access: AccessCheck, key: Buffer, principal: Buffer | null): Promise<void> {
  try {
    await access.check('put', key, principal);
  } catch (err) {
    if (!(err instanceof EkvError) || err.code !== 'FORBIDDEN') throw err;
    await access.check('del', key, principal);
  }
}
import type { RingDriver } from './ring-driver.ts';

export type CallerRule = 'client' | 'peer';

export interface OpSpec {
  readonly caller: CallerRule;
  /** Decodes and runs (the decoder is called first, before any work, and throws BAD_REQUEST and kin). */
  readonly run: (req: Record<string, unknown>, ctx: CallerContext) => Promise<RpcResult> | RpcResult;
}

export interface OpsInit {
  data: DataStore;
  ring: RingDriver;
  /** Built before the store's client path and passed in (the store itself never checks access). */
  access: AccessCheck & Pick<AccessService, 'handle'>;
  status: () => RpcResult;
  /** The node's metrics snapshot (enclave/metrics.ts), for attested operators such as the dashboard. */
  metrics?: () => RpcResult;
  /**
   * Who gets data-derived figures (status-view.ts): the rest get `status` without them, and no `metrics`.
   * Required, so that no catalogue hands out counts by forgetting to say who may have them.
   */
  operator: OperatorCheck;
  /**
   * The ring's generation now (how many times recovery members reopened it; docs/recovery.md), read at each
   * answer: every data answer of a reopened ring carries it as `g`, so that a client that has seen a newer generation refuses it.
   */
  generation?: () => number;
}

const accessOpsRule: ReadonlyArray<[string, CallerRule]> = [
  ...[...accessClientOps].map((o): [string, CallerRule] => [o, 'client']),
  ...[...accessPeerOps].map((o): [string, CallerRule] => [o, 'peer']),
];

export function catalogue(c: OpsInit): ReadonlyMap<string, OpSpec> {
  const shardOf = (k: Buffer): number => c.data.shardOfKey(k);
  const readAccess = scanAccessOf(c.access);
  const readable = async (key: Buffer, principal: Buffer | null): Promise<boolean> => readAccess.readable(key, principal);
  const runData = async (op: DataOpName, req: Record<string, unknown>, ctx: CallerContext): Promise<RpcResult> => {
    const key = decodeClientKey(req);
    // The access check comes first (before the rest of the request is even decoded), at the node that took
    // the request, so a refusal reveals nothing about the key or the request. A session is for writing:
    // opening one on a key's range needs the right to put or to delete that key.
    if (op !== 'open') await c.access.check(op, key, ctx.principal);
    else await checkOpen(c.access, key, ctx.principal);
    // Review-16 F4: a conditional write answers its condition whether or not it changes anything (a `del` with
    // ifVersion 0 is CONFLICT on a key with a value, `ok` on one without), so it reads the key. It needs the right
    // to read as well as to write, as a comparison in etcd's Txn does; the refusal does not depend on the key.
    if ((op === 'put' || op === 'del') && req.iv !== undefined && req.iv !== null && !(await readable(key, ctx.principal))) {
      throw new EkvError('FORBIDDEN', 'access denied: a conditional write (ifVersion) needs the right to read the key');
    }
    const q = decodeDataOp(op, req, key, shardOf, principalTag(ctx.principal));
    const shard = shardOf(key);
    let r: RpcResult;
    try {
      r = toRpcResult(await c.data.run(q), q.kind, shard, c.data.cfg.shards, c.data.cfg.windowMax);
    } catch (err) {
      // Review-14 F5: a write's refusal names the key's versions (CONFLICT `n`, `t`) only to a caller that may read it:
      // rights are independent, and a write-only caller would otherwise read any key's existence and write count.
      if (op === 'get' || !(err instanceof EkvError) || (err.version === undefined && err.absentAt === undefined) || (await readable(key, ctx.principal))) throw err;
      throw new EkvError(err.code, err.code === 'CONFLICT' ? 'the key\'s version differs from ifVersion' : err.message, err.reason === undefined ? {} : { reason: err.reason });
    }
    // The same for a delete that found no value: its `t` (the version of the key's delete) only to a reader.
    if (op === 'del' && r.t !== undefined && !(await readable(key, ctx.principal))) delete r.t;
    // The ring's generation after a recovery (docs/recovery.md; absent: 0, never reopened): a client that has
    // seen a newer one refuses this answer.
    const g = c.generation?.() ?? 0;
    return g > 0 ? { ...r, g } : r;
  };
  const dataOp = (op: DataOpName): OpSpec => ({ caller: 'client', run: (req, ctx) => runData(op, req, ctx) });
  const ops = new Map<string, OpSpec>([
    ['get', dataOp('get')],
    ['put', dataOp('put')],
    ['del', dataOp('del')],
    ['open', dataOp('open')],
    ['route', { caller: 'client', run: (req) => c.data.routeStep(decodeClientKey(req)) }],
    // Serving and ring state for every attested caller; keys, bytes and counters for operators only (review-4 A1).
    ['status', { caller: 'client', run: (_req, ctx) => (c.operator(ctx.principal) ? c.status() : publicStatus(c.status())) }],
    ...(c.metrics ? [['metrics', { caller: 'client', run: (_req, ctx) => metricsFor(ctx, c) }] as [string, OpSpec]] : []),
    // Peers: the Chord ring's messages, the data core's messages, a client's operation forwarded to its owner.
    ['ring', {
      caller: 'peer',
      run: (req, ctx) => {
        c.ring.receive(req.m, (ctx.peer as NonNullable<CallerContext['peer']>).key);
        return {};
      },
    }],
    ['dm', { caller: 'peer', run: (req, ctx) => c.data.onPeerMessage(req, (ctx.peer as NonNullable<CallerContext['peer']>).key) }],
    ['fwd', {
      caller: 'peer',
      // Checked by the forwarding node (an attested enclave running this image), with the client's proven key.
      run: async (req) => ({ r: resultToWire(await c.data.local(decodeForward(req, c.data.cfg.shards, shardOf))) }),
    }],
  ]);
  // Scans, namespace listing and batches (scan-ops.ts): each batch item is exactly its single operation.
  for (const [name, spec] of scanOps({ data: c.data, access: c.access, runData })) ops.set(name, spec);
  for (const [name, caller] of accessOpsRule) ops.set(name, { caller, run: (req, ctx) => c.access.handle(name, req, ctx) });
  return ops;
}

function metricsFor(ctx: CallerContext, c: OpsInit): RpcResult {
  // Every family but a few moves with the data (request, seal and replication counters, keys, bytes): the
  // snapshot is all or nothing. Before any work, like an access check.
  if (!c.operator(ctx.principal)) throw new EkvError('FORBIDDEN', 'metrics are for the ring\'s operators (the image\'s recovery members) in a closed ring');
  return (c.metrics as () => RpcResult)();
}

/** The enclave's request handler, built from the catalogue. */
export function dispatch(ops: ReadonlyMap<string, OpSpec>): Handler {
  return (op, req, ctx) => {
    const spec = ops.get(op);
    if (!spec) throw new EkvError('BAD_REQUEST', `unknown operation ${op.slice(0, 32)}`);
    if (spec.caller === 'peer' && !ctx.peer) throw new EkvError('FORBIDDEN', 'ring operations are for attested peer enclaves only');
    return spec.run(req, ctx);
  };
}
