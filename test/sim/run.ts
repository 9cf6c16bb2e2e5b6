// `npm run sim [-- --seed N] [--quick] [--json] [--plot [--plot-dir DIR]]`: the Chord paper's experiments on the
// real ring core. Progress goes to stderr, the tables (or one JSON document) to stdout; --plot also writes SVG
// charts (default test/sim/charts/) with the paper's published figures on the same axes, and sweeps the
// virtual nodes per node over 1, 2, 5, 10, 20 for the load chart.
// Any failure prints the seed that replays it.
import { fileURLToPath } from 'node:url';
import { writeSimCharts } from './plot.ts';
import {
  type FailureRow, type LoadRow, type PathRow, loadSpread, log2, pathLengthBootstrapped, pathLengthJoined,
  simultaneousFailures,
} from './experiments.ts';

interface Args { seed: number; quick: boolean; json: boolean; plot: string | null }

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { seed: 1, quick: false, json: false, plot: null };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    if (x === '--quick') a.quick = true;
    else if (x === '--json') a.json = true;
    else if (x === '--seed') a.seed = Number(argv[++i]);
    else if (x === '--plot') a.plot ??= fileURLToPath(new URL('./charts/', import.meta.url));
    else if (x === '--plot-dir') a.plot = argv[++i] ?? '';
    else throw new Error(`unknown argument ${x}; usage: run.ts [--seed N] [--quick] [--json] [--plot [--plot-dir DIR]]`);
  }
  if (!Number.isSafeInteger(a.seed) || a.seed < 0) throw new Error('--seed must be a non-negative integer');
  return a;
}

const progress = (s: string): void => void process.stderr.write(`[sim] ${s}\n`);
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

function pathPhase(a: Args): PathRow[] {
  const sizes = a.quick ? [100, 300, 1000] : [100, 300, 1000, 3000, 10000];
  const rows: PathRow[] = [];
  for (const n of sizes) {
    progress(`path length: ${n} nodes (bootstrapped, recursive + iterative)`);
    rows.push(...pathLengthBootstrapped(n, a.quick ? 1000 : 3000, a.seed + n, ['recursive', 'iterative']));
  }
  for (const n of a.quick ? [100] : [100, 300]) {
    progress(`path length: ${n} nodes built by join + stabilize`);
    rows.push(pathLengthJoined(n, a.quick ? 1000 : 3000, a.seed + n, 5000));
  }
  return rows;
}

function failurePhase(a: Args): FailureRow[] {
  const n = a.quick ? 300 : 1000;
  const rows: FailureRow[] = [];
  for (const p of [0.1, 0.2, 0.3, 0.4, 0.5]) {
    progress(`simultaneous failures: ${n} nodes, p = ${p}`);
    rows.push(simultaneousFailures(n, p, a.quick ? 1000 : 3000, a.seed + Math.round(p * 100), 100));
  }
  return rows;
}

function loadPhase(a: Args): LoadRow[] {
  const n = a.quick ? 1000 : 10000;
  const v = Math.floor(log2(n));
  const vs = a.plot === null ? [1, v] : [...new Set([1, 2, 5, 10, v, 20])].sort((x, y) => x - y);
  progress(`load: ${n} nodes, ${100 * n} keys, ${vs.join(', ')} virtual nodes per node`);
  return vs.map((x) => loadSpread(n, 100, x, a.seed));
}

function printPath(rows: PathRow[]): void {
  console.log('\n(1) Lookup path length (Chord: about 1/2 log2 N); path = hops to the key\'s predecessor, hops = to the owner');
  console.log('     N  build      mode       lookups  failed  1/2log2N  mean path  p1  p99  mean hops  ticks  converge');
  for (const r of rows) {
    const s = r.stats;
    console.log(`${String(r.n).padStart(6)}  ${r.build.padEnd(9)}  ${r.mode.padEnd(9)}  ${String(s.count).padStart(7)}  ${String(s.failed).padStart(6)}  ${f2(r.halfLog2N).padStart(8)}  ${f2(s.meanPath).padStart(9)}  ${String(s.p1Path).padStart(2)}  ${String(s.p99Path).padStart(3)}  ${f2(s.meanHops).padStart(9)}  ${f2(s.meanTicks).padStart(5)}  ${r.convergeTicks === undefined ? '-' : `${r.convergeTicks} ticks`}`);
  }
}

function printFailures(rows: FailureRow[]): void {
  console.log(`\n(2) Simultaneous failures: N = ${rows[0]?.n}, successor list r = ${rows[0]?.r} (log2 N); lookups right after the failure, then after 100 ticks of stabilization`);
  console.log('    p  keys lost (paper)      p^r  failed before  hops  ticks  failed after  hops  ticks  ring exact');
  for (const r of rows) {
    console.log(`  ${r.p.toFixed(1)}  ${pct(r.lostKeyFraction).padStart(16)}  ${r.pPowR.toExponential(1).padStart(7)}  ${pct(r.before.failed / r.before.count).padStart(13)}  ${f2(r.before.meanHops).padStart(4)}  ${f2(r.before.meanTicks).padStart(5)}  ${pct(r.after.failed / r.after.count).padStart(12)}  ${f2(r.after.meanHops).padStart(4)}  ${f2(r.after.meanTicks).padStart(5)}  ${r.afterRingExact ? 'yes' : 'no'}`);
  }
}

function printLoad(rows: LoadRow[]): void {
  console.log('\n(3) Keys per node (SHA-256 ids)');
  console.log('      N     keys  virtual  mean   p1   p99  max  max/mean  p99/mean');
  for (const r of rows) {
    console.log(`  ${String(r.n).padStart(5)}  ${String(r.keys).padStart(7)}  ${String(r.virtualPerNode).padStart(7)}  ${String(r.mean).padStart(4)}  ${String(r.p1).padStart(3)}  ${String(r.p99).padStart(4)}  ${String(r.max).padStart(3)}  ${f2(r.maxOverMean).padStart(8)}  ${f2(r.p99OverMean).padStart(8)}`);
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  progress(`seed ${a.seed}${a.quick ? ' (quick)' : ''}`);
  try {
    const path = pathPhase(a);
    const failures = failurePhase(a);
    const load = loadPhase(a);
    const seconds = (performance.now() - t0) / 1000;
    progress(`done in ${seconds.toFixed(1)} s`);
    if (a.plot !== null) {
      for (const f of await writeSimCharts(a.plot, { path, failures, load })) progress(`wrote ${f}`);
    }
    if (a.json) {
      console.log(JSON.stringify({ seed: a.seed, quick: a.quick, seconds, path, failures, load }, null, 2));
      return;
    }
    console.log(`Chord simulation, seed ${a.seed}${a.quick ? ' (quick)' : ''}, ${seconds.toFixed(1)} s`);
    printPath(path);
    printFailures(failures);
    printLoad(load);
  } catch (e) {
    process.stderr.write(`[sim] FAILED with seed ${a.seed} (replay: npm run sim -- --seed ${a.seed}${a.quick ? ' --quick' : ''})\n`);
    throw e;
  }
}

await main();
