/**
 * `npm run sim -- --plot [--plot-dir DIR]`: the simulator's results as SVG charts (vega-lite), each with the
 * Chord paper's published figures (Stoica et al., SIGCOMM 2001, section 6) on the same axes.
 */
import type { TopLevelSpec } from 'vega-lite';
import { writeChart } from '../plot/svg.ts';
import type { FailureRow, LoadRow, PathRow } from './experiments.ts';

/** Section 6 of the paper, as the issue quotes it. */
export const paper = {
  /** Mean path length is about ½ log2 N. */
  halfLog2: (n: number) => Math.log2(n) / 2,
  /** 10^6 keys on 10^4 nodes: 99th percentile / mean and 1st percentile / mean, with r virtual nodes per node. */
  virtual: [
    { r: 1, p99: 4.8, p1: 0 },
    { r: 20, p99: 1.6, p1: 0.5 },
  ],
  /** 10^4 nodes, 5 x 10^5 keys, no virtual nodes: the busiest node holds 9.1x the mean, the 99th percentile 4.6x. */
  busiest: { r: 1, max: 9.1, p99: 4.6 },
  /** A fraction p of nodes failed at once: about a fraction p of lookups fail (no replication). */
  failed: (p: number) => p,
};

type Row = Record<string, string | number>;

function pathSpec(rows: PathRow[]): TopLevelSpec {
  const ours = rows.filter((r) => r.build === 'bootstrap' && r.mode === 'recursive');
  const data: Row[] = [
    ...ours.map((r) => ({ n: r.n, value: r.stats.meanPath, series: 'ours: mean path (to the predecessor)' })),
    ...ours.map((r) => ({ n: r.n, value: r.stats.meanHops, series: 'ours: mean hops (to the owner)' })),
    ...ours.map((r) => ({ n: r.n, value: r.stats.p1Path, series: 'ours: 1st percentile path' })),
    ...ours.map((r) => ({ n: r.n, value: r.stats.p99Path, series: 'ours: 99th percentile path' })),
    ...ours.map((r) => ({ n: r.n, value: paper.halfLog2(r.n), series: 'paper: ½ log2 N' })),
  ];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Lookup path length vs number of nodes',
    width: 520, height: 320,
    data: { values: data },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'n', type: 'quantitative', scale: { type: 'log' }, title: 'nodes (N, log scale)' },
      y: { field: 'value', type: 'quantitative', title: 'messages per lookup' },
      color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', columns: 2 } },
      strokeDash: { condition: { test: "indexof(datum.series, 'paper') === 0", value: [6, 4] }, value: [1, 0] },
    },
  } as TopLevelSpec;
}

function loadSpec(rows: LoadRow[]): TopLevelSpec {
  const n = rows[0]?.n ?? 0;
  const keys = rows[0]?.keys ?? 0;
  const data: Row[] = [
    ...rows.map((r) => ({ r: r.virtualPerNode, value: r.p99 / r.mean, stat: '99th percentile', source: 'ours' })),
    ...rows.map((r) => ({ r: r.virtualPerNode, value: r.p1 / r.mean, stat: '1st percentile', source: 'ours' })),
    ...rows.map((r) => ({ r: r.virtualPerNode, value: r.max / r.mean, stat: 'busiest node', source: 'ours' })),
    ...paper.virtual.flatMap((p) => [
      { r: p.r, value: p.p99, stat: '99th percentile', source: 'paper (10^6 keys)' },
      { r: p.r, value: p.p1, stat: '1st percentile', source: 'paper (10^6 keys)' },
    ]),
    { r: paper.busiest.r, value: paper.busiest.max, stat: 'busiest node', source: 'paper (5x10^5 keys)' },
    { r: paper.busiest.r, value: paper.busiest.p99, stat: '99th percentile', source: 'paper (5x10^5 keys)' },
  ];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `Keys per node as a multiple of the mean (${n.toLocaleString('en')} nodes, ${keys.toLocaleString('en')} keys)`,
    width: 520, height: 320,
    data: { values: data },
    layer: [
      { transform: [{ filter: "datum.source === 'ours'" }], mark: { type: 'line', point: true }, encoding: { color: { field: 'stat', type: 'nominal', title: 'statistic' } } },
      {
        transform: [{ filter: "datum.source !== 'ours'" }],
        mark: { type: 'point', size: 120, filled: false, strokeWidth: 2 },
        encoding: { color: { field: 'stat', type: 'nominal' }, shape: { field: 'source', type: 'nominal', title: 'published' } },
      },
    ],
    encoding: {
      x: { field: 'r', type: 'quantitative', scale: { type: 'log' }, title: 'virtual nodes per node (r, log scale)' },
      y: { field: 'value', type: 'quantitative', title: 'keys / mean keys per node' },
    },
  } as TopLevelSpec;
}

function failureSpec(rows: FailureRow[]): TopLevelSpec {
  const data: Row[] = [
    ...rows.map((r) => ({ p: r.p, value: r.lostKeyFraction, series: 'ours: keys whose owner failed (no replication)' })),
    ...rows.map((r) => ({ p: r.p, value: r.before.failed / r.before.count, series: 'ours: lookups failed at once (successor lists)' })),
    ...rows.map((r) => ({ p: r.p, value: r.after.failed / r.after.count, series: 'ours: lookups failed after stabilization' })),
    ...rows.map((r) => ({ p: r.p, value: paper.failed(r.p), series: 'paper: about p' })),
  ];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `Lookups failed vs fraction of nodes failed at once (N = ${rows[0]?.n ?? 0})`,
    width: 520, height: 320,
    data: { values: data },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'p', type: 'quantitative', title: 'fraction of nodes failed (p)' },
      y: { field: 'value', type: 'quantitative', title: 'fraction of lookups failed', axis: { format: '%' } },
      color: { field: 'series', type: 'nominal', title: null, legend: { orient: 'bottom', columns: 1 } },
      strokeDash: { condition: { test: "indexof(datum.series, 'paper') === 0", value: [6, 4] }, value: [1, 0] },
    },
  } as TopLevelSpec;
}

export async function writeSimCharts(dir: string, r: { path: PathRow[]; failures: FailureRow[]; load: LoadRow[] }): Promise<string[]> {
  return Promise.all([
    writeChart(dir, 'path-length', pathSpec(r.path)),
    writeChart(dir, 'keys-per-node', loadSpec(r.load)),
    writeChart(dir, 'failed-lookups', failureSpec(r.failures)),
  ]);
}
