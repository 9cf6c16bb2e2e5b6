// `npm run sim:faults [-- --seed N | --seeds N [--from S]] [--broken FLAG] [--faults A,B] [--session-idle TICKS] [--trace]`: the seeded fault
// simulator of the data layer (README.md here). Prints one line per failing seed and a summary; exit 1 on any
// failure. `--seed N` replays one seed (with --trace, every fault and unknown outcome as it happens).
import { checkRun } from './check.ts';
import { defaultSimOptions, type FaultName, faultNames, FaultSim, type SimOptions } from './sim.ts';

interface Args { replicas: number; nodes: number; from: number; seeds: number; broken: SimOptions['broken']; mix: FaultName[] | undefined; trace: boolean; verbose: boolean; ttl: boolean; keys: number; sessionIdle: number; enclaveTiming: boolean }

const flags = ['noFencing', 'noLeaseWait', 'noDedup', 'noWitnessCheck', 'noBootFence', 'ackBeforePersist', 'expiryLocalOnly', 'expiryNotDurable', 'absoluteDeadlines', 'readsDependOnNothing', 'retiredNotCounted', 'retiredSelfNotCounted'] as const;

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { replicas: 3, nodes: 5, from: 1, seeds: 20, broken: undefined, mix: undefined, trace: false, verbose: false, ttl: true, keys: defaultSimOptions.keys, sessionIdle: 0, enclaveTiming: false };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    if (x === '--seed') { a.from = Number(argv[++i]); a.seeds = 1; a.verbose = true; }
    else if (x === '--seeds') a.seeds = Number(argv[++i]);
    else if (x === '--from') a.from = Number(argv[++i]);
    else if (x === '--trace') a.trace = true;
    else if (x === '--no-ttl') a.ttl = false;
    else if (x === '--enclave-timing') a.enclaveTiming = true;
    else if (x === '--keys') a.keys = Number(argv[++i]);
    else if (x === '--replicas') a.replicas = Number(argv[++i]);
    else if (x === '--nodes') a.nodes = Number(argv[++i]);
    else if (x === '--session-idle') a.sessionIdle = Number(argv[++i]);
    else if (x === '--faults') {
      const names = String(argv[++i]).split(',') as FaultName[];
      for (const n of names) if (!faultNames.includes(n)) throw new Error(`--faults takes a comma-separated list of ${faultNames.join(', ')}`);
      a.mix = names;
    }
    else if (x === '--broken') {
      const f = argv[++i] as (typeof flags)[number];
      if (!flags.includes(f)) throw new Error(`--broken takes one of ${flags.join(', ')}`);
      a.broken = { ...(a.broken ?? {}), [f]: true };
    } else throw new Error(`unknown argument ${x}; usage: run.ts [--seed N | --seeds N [--from S]] [--broken FLAG] [--faults A,B] [--replicas R --nodes N] [--keys K] [--no-ttl] [--session-idle TICKS] [--trace]`);
  }
  if (!Number.isSafeInteger(a.from) || a.from < 0 || !Number.isSafeInteger(a.seeds) || a.seeds < 1) throw new Error('seeds must be non-negative integers');
  if (!Number.isSafeInteger(a.keys) || a.keys < 1 || a.keys > 1000) throw new Error('--keys must be an integer in [1, 1000]');
  return a;
}

export function runSeed(seed: number, broken?: SimOptions['broken'], trace = false, mix?: readonly FaultName[], shape?: { replicas: number; nodes: number; keys?: number }, extra: { ttl?: boolean; sessionIdleTicks?: number; enclaveTiming?: boolean } = {}): ReturnType<typeof checkRun> & { faults: Record<string, number>; seed: number; expired: number } {
  const size = shape && (shape.replicas !== 3 || shape.nodes !== 5) ? { replicas: shape.replicas, nodes: shape.nodes, nodesMax: shape.nodes + 2 } : {};
  const keys = shape?.keys !== undefined && shape.keys !== defaultSimOptions.keys ? { keys: shape.keys } : {};
  const idle = extra.sessionIdleTicks ?? 0;
  const sim = new FaultSim({ ...defaultSimOptions, ...size, ...keys, seed, ...(broken ? { broken } : {}), ...(mix ? { mix } : {}), trace, ttl: extra.ttl ?? true, ...(idle > 0 ? { sessionIdleTicks: idle } : {}), ...(extra.enclaveTiming ? { enclaveTiming: true, healMs: 20_000, faultMs: 15_000 } : {}) });
  const r = sim.run();
  return { ...checkRun(r), faults: r.faults, seed, expired: r.expired };
}

function main(): void {
  const a = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  let failed = 0;
  let ops = 0;
  let faults = 0;
  let unknown = 0;
  let expired = 0;
  for (let s = a.from; s < a.from + a.seeds; s++) {
    const v = runSeed(s, a.broken, a.trace, a.mix, { replicas: a.replicas, nodes: a.nodes, keys: a.keys }, { ttl: a.ttl, sessionIdleTicks: a.sessionIdle, enclaveTiming: a.enclaveTiming });
    expired += v.expired;
    ops += v.ops;
    unknown += v.unknown;
    const nf = Object.values(v.faults).reduce((x, y) => x + y, 0);
    faults += nf;
    if (a.verbose) process.stdout.write(`seed ${s}: ${v.ops} ops checked, ${v.acked} writes acknowledged, ${v.unknown} unknown, ${v.expired} expired; faults ${JSON.stringify(v.faults)}\n`);
    if (!v.ok) {
      failed++;
      process.stdout.write(`FAIL seed ${s} (replay: npm run sim:faults -- --seed ${s}${a.ttl ? '' : ' --no-ttl'}${a.broken ? ' ' + Object.keys(a.broken).map((f) => `--broken ${f}`).join(' ') : ''}${a.mix ? ` --faults ${a.mix.join(',')}` : ''}${a.replicas !== 3 || a.nodes !== 5 ? ` --replicas ${a.replicas} --nodes ${a.nodes}` : ''}${a.keys !== defaultSimOptions.keys ? ` --keys ${a.keys}` : ''}${a.sessionIdle > 0 ? ` --session-idle ${a.sessionIdle}` : ''}${a.enclaveTiming ? ' --enclave-timing' : ''})\n${v.problems.slice(0, a.verbose ? 20 : 2).join('\n')}\n`);
    }
  }
  const secs = (performance.now() - t0) / 1000;
  process.stdout.write(`${a.seeds} seeds, ${failed} failed; ${ops} operations checked, ${unknown} writes of unknown outcome, ${expired} values expired, ${(faults / a.seeds).toFixed(1)} faults per seed; ${secs.toFixed(1)} s\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) main();
