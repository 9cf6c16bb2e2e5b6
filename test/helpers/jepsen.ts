// Jepsen-style fault runs against real processes (issue 11, docs/fault-testing.md): a local ring of N
// emulated nodes (enclaves are child processes; with `hostProcess` each host proxy is its own `ekv host`
// process), K SDK clients doing random get / put / delete / compare-and-set on a few keys with unique
// values, every operation recorded as invoke -> ok | fail (certainly not applied) | info (outcome unknown),
// a fault schedule run against the processes, then healing, a final read of every key through every node,
// and the checks: per-key linearizability (test/helpers/linearizability.ts, WGL; an `info` write may take
// effect at any time after its invocation, or never), no acknowledged write lost (the final read's version is
// at least that of every acknowledged write), no two values acknowledged at one version, no value of a
// write reported as failed ever read.
//
// Used by test/e2e-jepsen.test.ts (short runs) and `npm run jepsen` (test/jepsen/run.ts, long runs). The
// history and its checks are in jepsen-history.ts, the ring, its faults and the clients in jepsen-ring.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, Recorder, rng, type FaultEvent, type Verdict } from './jepsen-history.ts';
import { finalReads, JepsenRing, probeWrites, Workload, type RingOptions } from './jepsen-ring.ts';
import { sleep } from './ring-fixture.ts';

export * from './jepsen-history.ts';
export * from './jepsen-ring.ts';

// ---------------------------------------------------------------------------------------------------
// A whole run.

export interface FaultContext {
  ring: JepsenRing;
  rec: Recorder;
  keys: string[];
  rand: () => number;
  /** Log a fault event (recorded in the history's fault log, and printed). */
  mark(what: string): void;
  /** Record a figure about the faults (e.g. that a fault took hold), returned in the result. */
  fact(name: string, value: number): void;
}

export interface RunOptions {
  name: string;
  ring: RingOptions;
  clients: number;
  keys: number;
  seed: number;
  /** The SDK's per-request timeout (default 2000 ms). */
  timeoutMs?: number;
  /** Operations before the first fault (default 1500 ms). */
  warmupMs?: number;
  /** The fault schedule; the run heals whatever is left in force when it returns (or throws). */
  faults: (ctx: FaultContext) => Promise<void>;
  /** Operations after healing, before the final reads (default 3000 ms). */
  healMs?: number;
  /** How long to wait for the ring to settle after healing (default 30 s). */
  settleMs?: number;
  /** How long each final read may be retried (default 15 s). */
  finalMs?: number;
  /** Availability after healing fails the run too (Verdict.availability); default false. */
  strictAvailability?: boolean;
  /** Print progress and the summary (default: console.log). */
  log?: (line: string) => void;
  /** Keep the run directory (ring state and history) even when the run passes. */
  keep?: boolean;
}

export interface RunResult {
  ok: boolean;
  name: string;
  seed: number;
  verdict: Verdict;
  faults: FaultEvent[];
  /** One line (and the problems, on failure) for the test's message. */
  summary: string;
  /** Figures the schedule recorded (FaultContext.fact). */
  facts: Record<string, number>;
  /** Where the history was written (on failure, or with keep). */
  dumpPath: string | null;
  durationMs: number;
}

export async function runJepsen(o: RunOptions): Promise<RunResult> {
  const began = Date.now();
  const log = o.log ?? ((line: string) => console.log(line));
  const runDir = mkdtempSync(join('/tmp', 'ekv-jepsen-'));
  const rec = new Recorder();
  const keys = Array.from({ length: o.keys }, (_, i) => `jk${i}`);
  const rand = rng(o.seed);
  let ring: JepsenRing | null = null;
  let work: Workload | null = null;
  let verdict: Verdict;
  let settled: string | null = null;
  const facts: Record<string, number> = {};
  let scheduleError: string | null = null;
  const fault = (what: string) => {
    rec.mark(what);
    log(`[${o.name}] ${(rec.ms() / 1000).toFixed(1)}s ${what}`);
  };
  try {
    ring = await JepsenRing.start({ ...o.ring, dir: join(runDir, 'ring') });
    const why = await ring.settle(30_000);
    if (why) throw new Error(`the ring did not settle before the run: ${why}`);
    work = new Workload(ring.cluster, rec, { clients: o.clients, keys, seed: o.seed, timeoutMs: o.timeoutMs ?? 2000 });
    await work.start();
    await sleep(o.warmupMs ?? 1500);
    try {
      await o.faults({ ring, rec, keys, rand, mark: fault, fact: (name, value) => { facts[name] = (facts[name] ?? 0) + value; } });
    } catch (err) {
      // A schedule that cannot go on (e.g. a node that does not come back) fails the run, after the checks.
      scheduleError = (err as Error).message;
      fault(`schedule failed: ${scheduleError}`);
    } finally {
      await ring.heal();
      fault('healed');
    }
    await sleep(o.healMs ?? 3000);
    settled = await ring.settle(o.settleMs ?? 30_000);
    if (settled) fault(`not settled ${o.settleMs ?? 30_000} ms after healing: ${settled}`);
    await work.stop();
    work = null;
    const stuck = await probeWrites(rec, ring.cluster, keys, o.finalMs ?? 15_000);
    const missing = await finalReads(rec, ring.cluster, keys, o.finalMs ?? 15_000);
    verdict = check(rec, missing, stuck, { strict: o.strictAvailability === true });
    if (scheduleError) {
      verdict.ok = false;
      verdict.problems.unshift(`the fault schedule failed: ${scheduleError}`);
    }
  } catch (err) {
    // The run could not be checked at all (e.g. the ring never formed): nothing worth keeping.
    await work?.stop().catch(() => undefined);
    await ring?.stop().catch(() => undefined);
    work = null;
    ring = null;
    rmSync(runDir, { recursive: true, force: true });
    throw err;
  } finally {
    await work?.stop().catch(() => undefined);
    await ring?.stop().catch(() => undefined);
  }
  const c = verdict.counts;
  const a = verdict.anomalies;
  const anomalyText = Object.entries(a).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') || 'none';
  const availabilityText = Object.entries(verdict.availability).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') || 'ok';
  const faultText = rec.faults.map((f) => `${(f.t / 1000).toFixed(1)}s ${f.what}`).join('; ');
  let summary = `[${o.name}] seed ${o.seed}: ${c.ops} ops (${c.reads} reads, ${c.writes} writes): ok ${c.ok}, fail ${c.fail}, unknown ${c.info}; ` +
    `checked ${c.checked} ops; errors ${JSON.stringify(c.errors)}; anomalies: ${anomalyText}; availability after healing: ${availabilityText}${o.strictAvailability ? ' (strict)' : ''}; facts ${JSON.stringify(facts)}; faults: ${faultText}`;
  let dumpPath: string | null = null;
  if (!verdict.ok || o.keep) {
    dumpPath = join(runDir, 'history.json');
    writeFileSync(dumpPath, JSON.stringify({ name: o.name, seed: o.seed, options: { ...o, faults: undefined, log: undefined }, verdict, facts, faults: rec.faults, ops: rec.ops }, (_k, v) => (v === Infinity ? null : v)));
    summary += `\n  history: ${dumpPath}`;
  }
  if (!verdict.ok) summary += '\n' + verdict.problems.slice(0, 8).map((p) => `  ${p}`).join('\n');
  rmSync(join(runDir, 'ring'), { recursive: true, force: true });
  if (!dumpPath) rmSync(runDir, { recursive: true, force: true });
  log(summary);
  return { ok: verdict.ok, name: o.name, seed: o.seed, verdict, faults: rec.faults, facts, summary, dumpPath, durationMs: Date.now() - began };
}
