// The dashboard's model (pure): states and reasons, events, ops/s and latency percentiles from histogram deltas.
import { describe, expect, it } from 'vitest';
import { DashModel, percentile, type PollResult } from '../cli/dashboard/model.ts';
import { createMetricsRegistry } from '../enclave/metrics.ts';

const id = (b: number) => new Uint8Array(32).fill(b);
const att = { pcr0: 'ab'.repeat(48), moduleId: 'i-1', timestamp: 1000, leafNotAfter: 10_000, ringId: null };
function ok(at: number, metrics: unknown, serving = true): PollResult {
  return { ok: true, at, metrics, attestation: att, status: { id: id(0x80), serving, keys: 3, predecessor: { id: id(0x40), addr: 'b:1' }, successors: [{ id: id(0x40), addr: 'b:1' }] } };
}

describe('dashboard model', () => {
  it('percentiles interpolate within buckets of the delta', () => {
    const before = new Map([[0.001, 0], [0.01, 0], [Infinity, 0]]);
    const now = new Map([[0.001, 50], [0.01, 100], [Infinity, 100]]);
    expect(percentile(now, before, 0.5)).toBeCloseTo(0.001);
    expect(percentile(now, before, 0.75)).toBeCloseTo(0.0055);
    expect(percentile(now, now, 0.5)).toBeNull();
  });

  it('serving, then down with its reason (a death event), unattested on an attestation failure, back again', () => {
    const reg = createMetricsRegistry();
    const reqs = reg.counter('ekv_enclave_requests_total', 'r', ['op', 'caller', 'code']);
    const lat = reg.histogram('ekv_enclave_request_duration_seconds', 'l', ['op']);
    const m = new DashModel(['a:1'], 'test');
    m.update('a:1', ok(1000, reg.snapshot()));
    for (let i = 0; i < 20; i++) {
      reqs.inc({ op: 'get', caller: 'client', code: 'ok' });
      lat.observe(0.002, { op: 'get' });
    }
    reqs.inc({ op: 'ring', caller: 'peer', code: 'ok' });
    m.update('a:1', ok(3000, reg.snapshot()));
    let v = m.state(3000).nodes[0]!;
    expect(v.state).toBe('serving');
    expect(v.opsPerSec).toBeCloseTo(10);
    expect(v.latencyMs!.p50).toBeGreaterThan(1);
    expect(v.latencyMs!.p50).toBeLessThanOrEqual(2.5);
    expect(v.rangeShare).toBeCloseTo(0.25);
    m.update('a:1', { ok: false, at: 4000, code: 'TIMEOUT', message: 'status: no answer within 1000 ms' });
    v = m.state(4000).nodes[0]!;
    expect([v.state, v.reason]).toEqual(['down', 'TIMEOUT: status: no answer within 1000 ms']);
    m.update('a:1', { ok: false, at: 5000, code: 'UNATTESTED', message: 'PCR_MISMATCH' });
    expect(m.state(5000).nodes[0]!.state).toBe('unattested');
    m.update('a:1', ok(6000, reg.snapshot(), false));
    expect(m.state(6000).nodes[0]!.state).toBe('receiving');
    expect(m.state(6000).events.map((e) => e.kind)).toEqual(['back', 'attestation', 'death']);
  });

  it('epoch and lease per node from the node\'s data-layer metrics (the same families the host serves)', async () => {
    const { registerNodeMetrics } = await import('../enclave/node-metrics.ts');
    const reg = createMetricsRegistry();
    const ranges = [{ range: 0, epoch: 7, members: 3, role: 'owner' as const, leaseSeconds: 2.5 }, { range: 1, epoch: 4, members: 3, role: 'member' as const, leaseSeconds: null }];
    registerNodeMetrics({
      status: () => ({}), bytes: () => 0, startedAt: 0,
      data: () => ({ ranges, owned: 1, leased: 0, member: 2, underReplicated: 1, backlog: 0, expiring: 0, leaseMinSeconds: 2.5, epochMax: 7, expiredCollected: 0, resends: 0, fenced: 0, dropped: 0 }),
    }, reg);
    const m = new DashModel(['a:1'], 'test');
    m.update('a:1', ok(1000, reg.snapshot()));
    expect(m.state(1000).nodes[0]!.data).toEqual({ epoch: 7, owned: 1, leased: 0, leaseSeconds: 2.5, underReplicated: 1 });
    // A node whose data core does not run (recovery mode) shows nothing rather than zeros.
    const bare = createMetricsRegistry();
    registerNodeMetrics({ status: () => ({}), bytes: () => 0, startedAt: 0, data: () => null }, bare);
    m.update('a:1', ok(2000, bare.snapshot()));
    expect(m.state(2000).nodes[0]!.data).toBeNull();
  });
});
