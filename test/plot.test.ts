// `--plot` of the simulator and the kv benchmark: vega-lite specs render to SVG headless, with our series and
// the paper's published figures labelled on the same chart.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { writeBenchCharts } from './bench/plot.ts';
import type { FailureRow, LoadRow, PathRow } from './sim/experiments.ts';
import { writeSimCharts } from './sim/plot.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-plot-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const stats = (meanPath: number) => ({ count: 100, failed: 0, wrongOwner: 0, timedOut: 0, meanHops: meanPath + 1, meanPath, p1Path: 1, p99Path: meanPath + 3, meanTicks: 2 });

it('writes the simulator charts with the paper\'s figures, and the benchmark charts', async () => {
  const path: PathRow[] = [100, 1000].map((n) => ({ n, build: 'bootstrap', mode: 'recursive', halfLog2N: Math.log2(n) / 2, stats: stats(Math.log2(n) / 2 - 0.8), seconds: 1 }));
  const load: LoadRow[] = [1, 20].map((v) => ({ n: 1000, keys: 100_000, virtualPerNode: v, mean: 100, max: 700 / v, maxOverMean: 7 / v, p1: v === 1 ? 0 : 50, p99: 480 / Math.sqrt(v), p99OverMean: 4.8 / Math.sqrt(v), seconds: 1 }));
  const failures: FailureRow[] = [0.1, 0.5].map((p) => ({ n: 1000, r: 10, p, lostKeyFraction: p, pPowR: p ** 10, before: stats(4), after: stats(4), afterRingExact: true }));
  const files = await writeSimCharts(dir, { path, failures, load });
  const svg: Record<string, string> = Object.fromEntries(files.map((f) => [f.split('/').pop() as string, readFileSync(f, 'utf8')]));
  expect(Object.keys(svg).sort()).toEqual(['failed-lookups.svg', 'keys-per-node.svg', 'path-length.svg']);
  for (const s of Object.values(svg)) expect(s.startsWith('<svg')).toBe(true);
  expect(svg['path-length.svg']).toContain('paper: ½ log2 N');
  expect(svg['keys-per-node.svg']).toContain('paper (10^6 keys)');
  expect(svg['failed-lookups.svg']).toContain('paper: about p');

  const fig = { ops: 1000, errors: 0, seconds: 1, opsPerSec: 1000, p50Ms: 1, p99Ms: 5, maxMs: 9 };
  const bench = await writeBenchCharts(dir, { 'get-heavy 90/10': { ekv: fig, redis: { ...fig, opsPerSec: 9000 } } }, 'test');
  for (const f of bench) expect(readFileSync(f, 'utf8')).toContain('redis');
}, 60_000);
