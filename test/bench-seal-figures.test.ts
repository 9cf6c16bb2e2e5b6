// bench:kv's "where a sealed put's time goes" line (test/bench/lib/seal-figures.ts): the window's figures are the
// differences of the enclave's own counters and histograms between two scrapes of the host's /metrics.
import { describe, expect, it } from 'vitest';
import { formatSealFigures, parsePromText, sealFigures } from './bench/lib/seal-figures.ts';

/** A /metrics text as the host serves it: its own families, then the enclave's, labelled with the node. */
function scrape(o: { puts: number; putSeconds: number; requests: number; requestSeconds: number; seals: number; snapshots: number }): string {
  return [
    '# HELP ekv_host_connections_total Relayed connections',
    '# TYPE ekv_host_connections_total counter',
    'ekv_host_connections_total{direction="in"} 4',
    '# TYPE ekv_enclave_request_duration_seconds histogram',
    `ekv_enclave_request_duration_seconds_bucket{op="put",le="0.005",node="node-1"} ${Math.floor(o.puts / 2)}`,
    `ekv_enclave_request_duration_seconds_bucket{op="put",le="+Inf",node="node-1"} ${o.puts}`,
    `ekv_enclave_request_duration_seconds_sum{op="put",node="node-1"} ${o.putSeconds}`,
    `ekv_enclave_request_duration_seconds_count{op="put",node="node-1"} ${o.puts}`,
    'ekv_enclave_request_duration_seconds_sum{op="get",node="node-1"} 99',
    'ekv_enclave_request_duration_seconds_count{op="get",node="node-1"} 1000',
    `ekv_enclave_seal_appends_total{node="node-1"} ${o.seals}`,
    `ekv_enclave_seal_segment_writes_total{result="ok",node="node-1"} ${o.requests}`,
    'ekv_enclave_seal_segment_writes_total{result="error",node="node-1"} 7',
    `ekv_enclave_seal_fsync_duration_seconds_bucket{le="+Inf",node="node-1"} ${o.requests}`,
    `ekv_enclave_seal_fsync_duration_seconds_sum{node="node-1"} ${o.requestSeconds}`,
    `ekv_enclave_seal_fsync_duration_seconds_count{node="node-1"} ${o.requests}`,
    `ekv_enclave_seal_snapshots_total{result="ok",node="node-1"} ${o.snapshots}`,
    '',
  ].join('\n');
}

describe('bench:kv sealed-put figures from two /metrics scrapes', () => {
  it('reads the window as the difference of the two scrapes, per operation and per append request', () => {
    const before = parsePromText(scrape({ puts: 1000, putSeconds: 3, requests: 100, requestSeconds: 0.2, seals: 150, snapshots: 1 }));
    // In the window: 9,000 puts taking 36 s in all (4 ms each), 500 append requests taking 1.5 s (3 ms each),
    // 900 sealed records, 2 snapshots; the load generator issued 10,000 operations (gets too).
    const after = parsePromText(scrape({ puts: 10_000, putSeconds: 39, requests: 600, requestSeconds: 1.7, seals: 1050, snapshots: 3 }));
    const f = sealFigures(before, after, 10_000);
    expect(f).not.toBeNull();
    expect(f!.putMs).toBeCloseTo(4, 9);
    expect(f!.requestMs).toBeCloseTo(3, 9);
    expect(f!.requestsPerOp).toBeCloseTo(0.05, 9);
    expect(f!.putsPerRequest).toBeCloseTo(18, 9);
    expect(f!.sealsPerRequest).toBeCloseTo(1.8, 9);
    expect(f!.snapshots).toBe(2);
    expect(formatSealFigures(f!)).toContain('put inside the enclave 4.00 ms');
  });

  it('gives nothing for a window without answered appends (an unsealed node, or a scrape that failed)', () => {
    const same = parsePromText(scrape({ puts: 10, putSeconds: 1, requests: 5, requestSeconds: 1, seals: 5, snapshots: 0 }));
    expect(sealFigures(same, same, 1000)).toBeNull();
    expect(sealFigures([], parsePromText('ekv_enclave_request_duration_seconds_count{op="put"} 5\n'), 1000)).toBeNull();
  });

  it('skips comments and lines it cannot read, and keeps labels with escaped quotes', () => {
    const s = parsePromText('# TYPE x counter\nnot a sample line\nx{a="q\\"uote",b="2"} 3\ny +Inf\n');
    expect(s).toEqual([
      { name: 'x', labels: { a: 'q\\"uote', b: '2' }, value: 3 },
      { name: 'y', labels: {}, value: Infinity },
    ]);
  });
});
