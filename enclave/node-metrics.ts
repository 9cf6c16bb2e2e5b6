/**
 * The node's gauges, read at snapshot time from whatever runs the data path (today cluster/store.ts; the
 * data layer of docs/consistency.md fills the hooks in metrics.ts `m`: epoch, lease, ranges, backlog). Each
 * read is defensive: a field the running store does not report is absent from the snapshot, not zero.
 */
import type { RpcResult } from '../protocol/rpc.ts';
import { enclaveMetrics, type MetricsRegistry } from './metrics.ts';

export interface NodeMetricsSources {
  /** The node's status as the 'status' RPC answers it. */
  status: () => RpcResult;
  /** Bytes of live keys and values held. */
  bytes: () => number;
  startedAt: number;
}

const num = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const bool = (x: unknown): number | null => (typeof x === 'boolean' ? (x ? 1 : 0) : null);

/** Operations the request metrics name; any other string is counted as 'other'. */
export const clientOpNames = ['get', 'put', 'del', 'route', 'status', 'metrics'] as const;

const registered = new WeakMap<MetricsRegistry, { src: NodeMetricsSources }>();

/** Registers the node's gauges (once per registry; a second call only points them at new sources). */
export function registerNodeMetrics(source: NodeMetricsSources, r: MetricsRegistry = enclaveMetrics): void {
  const have = registered.get(r);
  if (have) {
    have.src = source;
    return;
  }
  const holder = { src: source };
  registered.set(r, holder);
  const src = { status: () => holder.src.status(), bytes: () => holder.src.bytes(), get startedAt() { return holder.src.startedAt; } };
  // One status read per snapshot, shared by the gauges below.
  let cached: { at: number; s: RpcResult | null } = { at: -1, s: null };
  const status = (): RpcResult | null => {
    const now = Date.now();
    if (cached.at !== now) {
      try {
        cached = { at: now, s: src.status() };
      } catch {
        cached = { at: now, s: null };
      }
    }
    return cached.s;
  };
  const field = (k: string) => status()?.[k];
  const stat = (k: string) => {
    const s = status();
    return s ? num(s[k]) : null;
  };
  r.gaugeFn('ekv_enclave_up_seconds', 'Seconds since this enclave started (its own clock)', () => (Date.now() - src.startedAt) / 1000);
  r.gaugeFn('ekv_enclave_keys', 'Live keys held by this node (owned and replicas)', () => num(field('keys')));
  r.gaugeFn('ekv_enclave_bytes', 'Bytes of live keys and values held by this node', () => src.bytes());
  r.gaugeFn('ekv_enclave_serving', '1 when this node serves its range (0 while it pulls it)', () => bool(field('serving')));
  r.gaugeFn('ekv_enclave_durable', '1 while the sealed log works (0: the node refuses writes until it recovers)', () => bool(field('durable')));
  r.gaugeFn('ekv_enclave_ring_predecessor_known', '1 when the node knows its predecessor', () => (status() ? (field('predecessor') ? 1 : 0) : null));
  r.gaugeFn('ekv_enclave_ring_successors', 'Successors in the node\'s list', () => {
    const s = field('successors');
    return Array.isArray(s) ? s.filter((x) => x !== null).length : null;
  });
  r.gaugeFn('ekv_enclave_replicas_configured', 'Copies of each key the image asks for (R)', () => num(field('replicas')));
  r.counterFn('ekv_enclave_lookups_total', 'Ring lookups done by this node', () => stat('lookups'));
  r.counterFn('ekv_enclave_lookup_hops_total', 'Hops over all ring lookups done by this node', () => stat('hops'));
  r.counterFn('ekv_enclave_forwards_total', 'Client requests forwarded to the key\'s owner', () => stat('forwards'));
  r.counterFn('ekv_enclave_replication_failures_total', 'Replications to a successor that failed', () => stat('replicationFailures'));
  r.counterFn('ekv_enclave_pulls_total', 'Range pulls from successors', () => stat('pulls'));
  r.counterFn('ekv_enclave_sync_pushed_total', 'Entries pushed to replicas by background sync', () => stat('syncPushed'));
  r.counterFn('ekv_enclave_persist_failures_total', 'Writes that could not be made durable here (the sealed log failed)', () => stat('persistFailures'));
  r.counterFn('ekv_enclave_seal_recoveries_total', 'Times the sealed log was sealed again after a failure', () => stat('recoveries'));
  r.counterFn('ekv_enclave_conflicts_total', 'Replica entries refused as conflicting', () => stat('conflicts'));
}
