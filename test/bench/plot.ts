/**
 * `npm run bench:kv -- --plot [--plot-dir DIR]`: the benchmark's figures as SVG charts (vega-lite):
 * throughput and p50/p99 latency per mix and system (ekv, redis), and the sealed-vs-unsealed puts.
 */
import type { TopLevelSpec } from 'vega-lite';
import { writeChart } from '../plot/svg.ts';
import type { RunFigures } from './lib/stats.ts';

type Results = Record<string, Record<string, RunFigures>>;

function throughputSpec(results: Results, caption: string, sealed?: { sealed: RunFigures; unsealed: RunFigures }): TopLevelSpec {
  const rows = Object.entries(results).flatMap(([mix, by]) => Object.entries(by).map(([system, f]) => ({ mix, system, ops: f.opsPerSec })));
  if (sealed) rows.push({ mix: 'put-heavy 10/90', system: 'ekv --no-seal', ops: sealed.unsealed.opsPerSec });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Throughput (closed loop)', subtitle: caption },
    data: { values: rows },
    width: 200, height: 260,
    mark: 'bar',
    encoding: {
      column: { field: 'mix', type: 'nominal', title: null },
      x: { field: 'system', type: 'nominal', title: null, axis: { labelAngle: 0 } },
      y: { field: 'ops', type: 'quantitative', title: 'operations per second' },
      color: { field: 'system', type: 'nominal', legend: null },
    },
  } as TopLevelSpec;
}

function latencySpec(results: Results, caption: string): TopLevelSpec {
  const rows = Object.entries(results).flatMap(([mix, by]) => Object.entries(by).flatMap(([system, f]) => [
    { mix, system, stat: 'p50', ms: f.p50Ms },
    { mix, system, stat: 'p99', ms: f.p99Ms },
  ]));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Latency per request', subtitle: caption },
    data: { values: rows },
    width: 200, height: 260,
    mark: 'bar',
    encoding: {
      column: { field: 'mix', type: 'nominal', title: null },
      x: { field: 'system', type: 'nominal', title: null, axis: { labelAngle: 0 } },
      xOffset: { field: 'stat' },
      y: { field: 'ms', type: 'quantitative', title: 'milliseconds' },
      color: { field: 'stat', type: 'nominal', title: 'percentile' },
    },
  } as TopLevelSpec;
}

export function writeBenchCharts(dir: string, results: Results, caption: string, sealed?: { sealed: RunFigures; unsealed: RunFigures }): Promise<string[]> {
  return Promise.all([
    writeChart(dir, 'kv-throughput', throughputSpec(results, caption, sealed)),
    writeChart(dir, 'kv-latency', latencySpec(results, caption)),
  ]);
}
