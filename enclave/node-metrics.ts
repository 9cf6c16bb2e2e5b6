/**
 * The node's gauges, read at snapshot time from the data path (cluster/data-store.ts: its status, and its
 * metrics() for the data layer of docs/consistency.md: epoch and lease per range, ranges owned, leased and held,
 * under-replicated ranges, re-replication backlog, retries, expiry). Each read is defensive: a field the running
 * store does not report is absent from the snapshot, not zero. Labels: `range` is a range number (a fixed slice
 * of the hash space, 0..S-1), never a key.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { RpcResult } from '../protocol/rpc.ts';
import type { DataMetrics } from './cluster/data-store.ts';
import { enclaveMetrics, type MetricsRegistry } from './metrics.ts';

export interface NodeMetricsSources {
  /** The node's status as the 'status' RPC answers it. */
  status: () => RpcResult;
  /** Bytes of live keys and values held. */
  bytes: () => number;
  startedAt: number;
  /** The data layer's figures (DataStore.metrics()); null while its core is not running (recovery mode, failed closed). */
  data?: () => DataMetrics | null;
}

const num = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const bool = (x: unknown): number | null => (typeof x === 'boolean' ? (x ? 1 : 0) : null);

/** Operations the request metrics name; any other string is counted as 'other'. */
export const clientOpNames = ['get', 'put', 'del', 'route', 'status', 'metrics'] as const;

/** The window of ekv_enclave_event_loop_delay_max_seconds (the gauge covers the last one or two). */
const eventLoopWindowMs = 10_000;

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
  const src = { status: () => holder.src.status(), bytes: () => holder.src.bytes(), data: () => holder.src.data?.() ?? null, get startedAt() { return holder.src.startedAt; } };
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
  // The longest stretch the event loop was held (nothing answered: clients, peers, lease renewals) over the last
  // 10-20 s: a synchronous step (a snapshot's capture, a large batch) or a GC pause shows here, not in p99.
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let lastWindowMaxNs = 0;
  setInterval(() => {
    lastWindowMaxNs = loop.max;
    loop.reset();
  }, eventLoopWindowMs).unref();
  r.gaugeFn('ekv_enclave_event_loop_delay_max_seconds', 'Longest event-loop delay (nothing answered meanwhile) in the last 10 to 20 s', () => Math.max(lastWindowMaxNs, loop.max) / 1e9);
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
  r.counterFn('ekv_enclave_persist_failures_total', 'Writes that could not be made durable here (the sealed log failed)', () => stat('persistFailures'));
  r.counterFn('ekv_enclave_seal_recoveries_total', 'Times the sealed log was sealed again after a failure', () => stat('recoveries'));
  registerDataMetrics(r, src.data);
}

/** The data layer's families (docs/observability.md), read once per snapshot from DataStore.metrics(). */
function registerDataMetrics(r: MetricsRegistry, read: () => DataMetrics | null): void {
  let cached: { at: number; d: DataMetrics | null } = { at: -1, d: null };
  const data = (): DataMetrics | null => {
    const now = Date.now();
    if (cached.at !== now) {
      try {
        cached = { at: now, d: read() };
      } catch {
        cached = { at: now, d: null };
      }
    }
    return cached.d;
  };
  const pick = (f: (d: DataMetrics) => number | null) => (): number | null => {
    const d = data();
    return d ? f(d) : null;
  };
  const perRange = (f: (x: DataMetrics['ranges'][number]) => number | null) => (): Array<[Record<string, string>, number]> | null => {
    const d = data();
    if (!d) return null;
    const out: Array<[Record<string, string>, number]> = [];
    for (const x of d.ranges) {
      const v = f(x);
      if (v !== null) out.push([{ range: String(x.range) }, v]);
    }
    return out;
  };
  r.gaugeFn('ekv_enclave_epoch', 'Configuration epoch of the ranges this node serves as owner (highest; 0: none)', pick((d) => d.epochMax));
  r.gaugeFn('ekv_enclave_lease_remaining_seconds', 'Time left on this node\'s read leases (lowest over the ranges it owns; absent: none)', pick((d) => d.leaseMinSeconds));
  r.gaugeFn('ekv_enclave_ranges_owned', 'Ranges this node owns and serves writes for (active owner)', pick((d) => d.owned));
  r.gaugeFn('ekv_enclave_ranges_leased', 'Ranges this node owns with a valid read lease (serves reads)', pick((d) => d.leased));
  r.gaugeFn('ekv_enclave_ranges_member', 'Ranges whose configuration names this node (it holds a copy)', pick((d) => d.member));
  r.gaugeFn('ekv_enclave_ranges_under_replicated', 'Ranges this node is the configured owner of with fewer than R members, or a member it has not heard from lately', pick((d) => d.underReplicated));
  r.gaugeFn('ekv_enclave_rereplication_backlog', 'Entries on their way to members (ranges being synced or installed by this node)', pick((d) => d.backlog));
  r.gaugeFn('ekv_enclave_expiring_keys', 'Values with a ttl waiting for their deadline in the ranges this node holds', pick((d) => d.expiring));
  r.gaugeFn('ekv_enclave_range_epoch', 'Configuration epoch of each range this node knows, by range number', perRange((x) => x.epoch));
  r.gaugeFn('ekv_enclave_range_members', 'Members of each range\'s configuration as this node knows it, by range number', perRange((x) => x.members));
  r.gaugeFn('ekv_enclave_range_lease_remaining_seconds', 'Time left on this node\'s read lease of each range it owns, by range number', perRange((x) => (x.role === 'owner' ? x.leaseSeconds : null)));
  r.counterFn('ekv_enclave_replication_retries_total', 'Replicate, sync, install, prepare and accept rounds sent again (no answer in time)', pick((d) => d.resends));
  r.counterFn('ekv_enclave_replication_failures_total', 'Replication that failed: writes or syncs answered FENCED, data messages dropped or undeliverable', pick((d) => d.fenced + d.dropped));
  r.counterFn('ekv_enclave_expired_collected_total', 'Expired values replaced by their tombstone (acknowledged by every member) by this node as owner', pick((d) => d.expiredCollected));
}
