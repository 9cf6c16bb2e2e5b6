/**
 * The dashboard's model: what one poll of a node brought (over its attested session), folded into the
 * state the page draws and the events it lists. Pure: no sockets or timers here (cli/dashboard/poller.ts
 * feeds it), so test/dashboard-model.test.ts drives it directly.
 */
import { parseMetricsSnapshot, type MetricsSnapshot } from '../../protocol/metrics.ts';

export type NodeState = 'serving' | 'receiving' | 'down' | 'unattested';

/** One poll's result for a node. */
export type PollResult =
  | {
      ok: true;
      at: number;
      status: Record<string, unknown>;
      metrics: unknown;
      attestation: { pcr0: string; moduleId: string; timestamp: number; leafNotAfter: number; ringId: string | null };
    }
  | { ok: false; at: number; code: string; message: string };

export interface NodeView {
  addr: string;
  state: NodeState;
  /** Why it is down or unattested (the error code and message), or null. */
  reason: string | null;
  since: number;
  id: string | null;
  /** Position on the ring in [0, 1): the id's leading 32 bits. */
  angle: number | null;
  predecessor: { id: string; addr: string } | null;
  successors: Array<{ id: string; addr: string }>;
  /** Share of the ring this node owns (from its predecessor to itself). */
  rangeShare: number | null;
  keys: number | null;
  bytes: number | null;
  /**
   * The data layer (docs/consistency.md), from the node's attested metrics: the highest epoch of the ranges it
   * owns, how many it owns and how many of those it holds a read lease for, and the lowest lease left (seconds).
   */
  data: { epoch: number | null; owned: number | null; leased: number | null; leaseSeconds: number | null; underReplicated: number | null } | null;
  durable: boolean | null;
  opsPerSec: number | null;
  latencyMs: { p50: number; p95: number; p99: number } | null;
  pcr0: string | null;
  moduleId: string | null;
  documentAgeMs: number | null;
  ringId: string | null;
  /** Reported by the node's host (untrusted), shown apart. */
  hostSays: { pids?: Record<string, number | null> } | null;
  lastSeen: number | null;
}

export interface DashEvent {
  at: number;
  kind: 'join' | 'leave' | 'death' | 'back' | 'attestation' | 'serving' | 'receiving' | 'durability';
  node: string;
  detail: string;
}

export interface DashState {
  at: number;
  nodes: NodeView[];
  events: DashEvent[];
  trust: string;
}

export const eventsMax = 50;
const clientOps = new Set(['get', 'put', 'del']);
const attestationCodes = new Set(['UNATTESTED', 'WRONG_RING', 'TAMPERED']);

const hex = (b: unknown): string | null => (b instanceof Uint8Array ? Buffer.from(b).toString('hex') : null);
const angleOf = (idHex: string | null): number | null => (idHex && idHex.length >= 8 ? parseInt(idHex.slice(0, 8), 16) / 2 ** 32 : null);
const ref = (x: unknown): { id: string; addr: string } | null => {
  if (typeof x !== 'object' || x === null) return null;
  const r = x as Record<string, unknown>;
  const id = hex(r.id);
  return id && typeof r.addr === 'string' ? { id, addr: r.addr.slice(0, 100) } : null;
};

/** Cumulative counts by upper bound, summed over series whose labels pass `keep`. */
function histogram(s: MetricsSnapshot, name: string, keep: (l: Record<string, string>) => boolean): Map<number, number> {
  const out = new Map<number, number>();
  const fam = s.f.find((f) => f.n === name);
  for (const [suffix, labels, value] of fam?.s ?? []) {
    if (suffix !== '_bucket' || !keep(labels)) continue;
    const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
    out.set(le, (out.get(le) ?? 0) + value);
  }
  return out;
}

function counterSum(s: MetricsSnapshot, name: string, keep: (l: Record<string, string>) => boolean): number {
  const fam = s.f.find((f) => f.n === name);
  return (fam?.s ?? []).filter(([suffix, l]) => suffix === '' && keep(l)).reduce((a, [, , v]) => a + v, 0);
}

function gauge(s: MetricsSnapshot, name: string): number | null {
  const v = s.f.find((f) => f.n === name)?.s[0]?.[2];
  return typeof v === 'number' ? v : null;
}

/** A percentile from the difference of two cumulative histograms (linear within a bucket), in the buckets' unit. */
export function percentile(now: Map<number, number>, before: Map<number, number> | undefined, q: number): number | null {
  const bounds = [...now.keys()].sort((a, b) => a - b);
  const delta = bounds.map((b) => (now.get(b) ?? 0) - (before?.get(b) ?? 0));
  const total = delta[delta.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (let i = 0; i < bounds.length; i++) {
    const c = delta[i] as number;
    const b = bounds[i] as number;
    if (c >= rank) {
      if (!Number.isFinite(b)) return prevBound;
      const inBucket = c - prevCount;
      return inBucket <= 0 ? b : prevBound + ((b - prevBound) * (rank - prevCount)) / inBucket;
    }
    prevBound = b;
    prevCount = c;
  }
  return prevBound;
}

interface Prev {
  at: number;
  ops: number;
  hist: Map<number, number>;
}

export class DashModel {
  private readonly views = new Map<string, NodeView>();
  private readonly prev = new Map<string, Prev>();
  private readonly events: DashEvent[] = [];
  private readonly idsSeen = new Set<string>();
  private readonly missing = new Map<string, number>();
  private rounds = 0;

  constructor(readonly addrs: string[], readonly trust: string) {
    for (const addr of addrs) this.views.set(addr, blank(addr));
  }

  private event(at: number, kind: DashEvent['kind'], node: string, detail: string): void {
    this.events.unshift({ at, kind, node, detail });
    this.events.length = Math.min(this.events.length, eventsMax);
  }

  /** Folds one node's poll into the state; returns whether anything visible changed. */
  update(addr: string, r: PollResult, hostSays: NodeView['hostSays'] = null): void {
    const old = this.views.get(addr) ?? blank(addr);
    const v: NodeView = { ...old, hostSays };
    if (!r.ok) {
      const state: NodeState = attestationCodes.has(r.code) ? 'unattested' : 'down';
      v.state = state;
      v.reason = `${r.code}: ${r.message}`.slice(0, 300);
      v.opsPerSec = null;
      v.latencyMs = null;
      if (old.state !== state) {
        v.since = r.at;
        if (state === 'unattested') this.event(r.at, 'attestation', addr, `attestation failed: ${v.reason}`);
        else if (old.lastSeen !== null) this.event(r.at, 'death', addr, `stopped answering: ${v.reason}`);
      }
      this.prev.delete(addr);
      this.views.set(addr, v);
      return;
    }
    const s = r.status;
    let snap: MetricsSnapshot | null = null;
    try {
      snap = parseMetricsSnapshot(r.metrics);
    } catch {
      snap = null;
    }
    v.id = hex(s.id);
    v.angle = angleOf(v.id);
    v.predecessor = ref(s.predecessor);
    v.successors = Array.isArray(s.successors) ? s.successors.map(ref).filter((x): x is { id: string; addr: string } => x !== null).slice(0, 16) : [];
    v.keys = typeof s.keys === 'number' ? s.keys : null;
    v.durable = typeof s.durable === 'boolean' ? s.durable : null;
    const serving = s.serving === true;
    const state: NodeState = serving ? 'serving' : 'receiving';
    if (old.state !== state) {
      v.since = r.at;
      if (old.state === 'down' && old.lastSeen !== null) this.event(r.at, 'back', addr, `answering again (${state})`);
      else if (old.state === 'unattested') this.event(r.at, 'back', addr, `attested again (${state})`);
      else if (old.lastSeen !== null) this.event(r.at, state === 'serving' ? 'serving' : 'receiving', addr, state === 'serving' ? 'serves its range' : 'receiving its range');
    }
    if (old.durable === true && v.durable === false) this.event(r.at, 'durability', addr, 'sealed log failing: refusing writes');
    v.state = state;
    v.reason = null;
    v.lastSeen = r.at;
    v.pcr0 = r.attestation.pcr0;
    v.moduleId = r.attestation.moduleId;
    v.documentAgeMs = r.at - r.attestation.timestamp;
    v.ringId = r.attestation.ringId;
    if (v.predecessor && v.id) v.rangeShare = ringDistance(v.predecessor.id, v.id);
    else v.rangeShare = null;
    if (snap) {
      v.bytes = gauge(snap, 'ekv_enclave_bytes');
      const owned = gauge(snap, 'ekv_enclave_ranges_owned');
      v.data = owned === null && gauge(snap, 'ekv_enclave_epoch') === null ? null : {
        epoch: gauge(snap, 'ekv_enclave_epoch'), owned, leased: gauge(snap, 'ekv_enclave_ranges_leased'),
        leaseSeconds: gauge(snap, 'ekv_enclave_lease_remaining_seconds'), underReplicated: gauge(snap, 'ekv_enclave_ranges_under_replicated'),
      };
      const ops = counterSum(snap, 'ekv_enclave_requests_total', (l) => l.caller === 'client' && clientOps.has(l.op ?? ''));
      const hist = histogram(snap, 'ekv_enclave_request_duration_seconds', (l) => clientOps.has(l.op ?? ''));
      const p = this.prev.get(addr);
      if (p && r.at > p.at) {
        v.opsPerSec = Math.max(0, ((ops - p.ops) * 1000) / (r.at - p.at));
        const q = (x: number) => percentile(hist, p.hist, x);
        const p50 = q(0.5);
        v.latencyMs = p50 === null ? null : { p50: p50 * 1000, p95: (q(0.95) ?? 0) * 1000, p99: (q(0.99) ?? 0) * 1000 };
      }
      this.prev.set(addr, { at: r.at, ops, hist });
    }
    this.views.set(addr, v);
  }

  /** After a round over every node: ring membership events (a new id joined; an id no live node knows left). */
  endRound(at: number): void {
    const live = [...this.views.values()].filter((v) => v.state === 'serving' || v.state === 'receiving');
    const known = new Map<string, string>();
    for (const v of live) {
      if (v.id) known.set(v.id, v.addr);
      for (const s of v.successors) known.set(s.id, s.addr);
      if (v.predecessor) known.set(v.predecessor.id, v.predecessor.addr);
    }
    for (const [id, addr] of known) {
      this.missing.delete(id);
      if (this.idsSeen.has(id)) continue;
      this.idsSeen.add(id);
      if (this.rounds > 0) this.event(at, 'join', addr, `node ${id.slice(0, 12)} joined the ring`);
    }
    for (const id of this.idsSeen) {
      if (known.has(id) || live.length === 0) continue;
      const n = (this.missing.get(id) ?? 0) + 1;
      this.missing.set(id, n);
      if (n === 2) {
        this.event(at, 'leave', [...this.views.values()].find((v) => v.id === id)?.addr ?? '?', `node ${id.slice(0, 12)} is no longer in the ring`);
        this.idsSeen.delete(id);
        this.missing.delete(id);
      }
    }
    this.rounds++;
  }

  state(at: number): DashState {
    return { at, nodes: this.addrs.map((a) => this.views.get(a) ?? blank(a)), events: [...this.events], trust: this.trust };
  }
}

/** (to - from) mod 2^256 as a share of the ring, from the leading 52 bits (enough for a picture). */
export function ringDistance(fromHex: string, toHex: string): number {
  const a = parseInt(fromHex.slice(0, 13), 16);
  const b = parseInt(toHex.slice(0, 13), 16);
  const full = 2 ** 52;
  const d = (((b - a) % full) + full) % full;
  return d === 0 ? 1 : d / full;
}

function blank(addr: string): NodeView {
  return {
    addr, state: 'down', reason: 'not polled yet', since: 0, id: null, angle: null, predecessor: null, successors: [], rangeShare: null,
    keys: null, bytes: null, data: null, durable: null, opsPerSec: null, latencyMs: null, pcr0: null, moduleId: null, documentAgeMs: null, ringId: null,
    hostSays: null, lastSeen: null,
  };
}
