// The fault simulator of the data layer (test/sim-faults/): a short run of the random schedule must be
// linearizable with no acknowledged write lost, a seed must replay exactly, and each deliberately broken build
// (test-only flags) must produce a failing seed, so we know the simulator can fail.
import { describe, expect, it } from 'vitest';
import { checkRun } from './sim-faults/check.ts';
import { runSeed } from './sim-faults/run.ts';
import { defaultSimOptions, type FaultName, FaultSim, type SimOptions } from './sim-faults/sim.ts';

const seedsShort = 200;

describe('fault simulator (issue 11)', () => {
  it(`${seedsShort} seeds of the random fault schedule: linearizable per key, no acknowledged write lost`, () => {
    const failures: string[] = [];
    let ops = 0;
    let faults = 0;
    let rollbacks = 0;
    let detected = 0;
    let clones = 0;
    for (let seed = 1; seed <= seedsShort; seed++) {
      const v = runSeed(seed);
      rollbacks += v.faults['kill-rollback'] ?? 0;
      detected += v.faults['rollback-detected'] ?? 0;
      clones += v.faults.clone ?? 0;
      ops += v.ops;
      faults += Object.values(v.faults).reduce((a, b) => a + b, 0);
      if (!v.ok) failures.push(`seed ${seed} (npm run sim:faults -- --seed ${seed}): ${v.problems[0]}`);
    }
    expect(failures).toEqual([]);
    // The run must have done something: operations checked and faults injected in every seed on average.
    expect(ops / seedsShort).toBeGreaterThan(100);
    expect(faults / seedsShort).toBeGreaterThan(5);
    // Rollbacks (a prefix of the log) happen, and restarted nodes find them from their peers' witnesses.
    expect(rollbacks).toBeGreaterThan(10);
    expect(detected).toBeGreaterThan(rollbacks / 2);
    // Clones at the exact durable position run beside their originals (docs/consistency.md, "Boots and clones").
    expect(clones).toBeGreaterThan(10);
  }, 300_000);

  it('replays a seed exactly', () => {
    const a = new FaultSim({ ...defaultSimOptions, seed: 7 }).run();
    const b = new FaultSim({ ...defaultSimOptions, seed: 7 }).run();
    expect(JSON.stringify(b.history)).toBe(JSON.stringify(a.history));
    expect(b.faults).toEqual(a.faults);
    expect(checkRun(a).ok).toBe(true);
  });

  // Each broken build against the fault mix of the table row it reopens; the first failing seed is enough.
  const broken: Array<[string, SimOptions['broken'], FaultName[] | undefined]> = [
    ['fencing off (row 1: a paused owner resumes and writes)', { noFencing: true }, ['stale-owner']],
    ['lease wait off (row 1: a cut-off owner keeps reading)', { noLeaseWait: true }, ['isolate']],
    ['dedup off (row 2: retries applied twice)', { noDedup: true }, undefined],
    ['ack before persist (row 3: acknowledged, not durable)', { ackBeforePersist: true }, ['whole-ring-restart', 'kill-pair']],
    ['boot fence off (a copy of a running node at its exact log position votes as the same member)', { noBootFence: true }, ['clone']],
  ];
  for (const [name, flags, mix] of broken) {
    it(`catches a broken build: ${name}`, () => {
      let failing: number | null = null;
      for (let seed = 1; seed <= 30 && failing === null; seed++) if (!runSeed(seed, flags, false, mix).ok) failing = seed;
      expect(failing, 'no failing seed in 1..30').not.toBeNull();
      // The same seed passes on the correct build: the failure is the flag's doing.
      expect(runSeed(failing as number, undefined, false, mix).ok).toBe(true);
    }, 120_000);
  }

  // Seeds that failed during development, each with the fault mix it failed under (and the broken build, if it
  // was one): they must pass on the correct build, and a broken one must still fail, so the seed keeps its bite.
  // (Seed 186 of kill,pause,partition,net-lossy was noWitnessCheck's until the boot fence changed the schedules; seed 9
  // of the whole mix fails with it now, and passes on the correct build.)
  const regressions: Array<{ seed: number; mix: FaultName[] | undefined; why: string; broken?: SimOptions['broken'] }> = [
    { seed: 9, mix: undefined, broken: { noWitnessCheck: true }, why: 'a node rolled back (prefix of its log) votes again with forgotten promises: a read misses an acknowledged write' },
    { seed: 2, mix: ['clone'], broken: { noBootFence: true }, why: 'a copy of a running node at its exact log position (the original hidden from its peers meanwhile) passes the witness check and votes as the same member: a read misses an acknowledged write' },
  ];
  for (const r of regressions) {
    it(`regression seed ${r.seed} (${r.mix?.join(',') ?? 'all faults'}): ${r.why}`, () => {
      const v = runSeed(r.seed, undefined, false, r.mix);
      expect(v.problems).toEqual([]);
      // (A broken build takes another path through the same seed: its schedule diverges once it behaves differently.)
      if (r.broken) expect(runSeed(r.seed, r.broken, false, r.mix).ok).toBe(false);
    }, 60_000);
  }

  // Scans (docs/scans.md) in the workload: each scanned value is a get linearized within the scan, so no scan
  // returns a value older than a write acknowledged before it started; and a scan that skips the lease is caught.
  const scanRun = (seed: number, broken?: SimOptions['broken'], mix?: FaultName[]) =>
    checkRun(new FaultSim({ ...defaultSimOptions, seed, scans: 0.15, ...(broken ? { broken } : {}), ...(mix ? { mix } : {}) }).run());
  it('scans in the workload: every scanned value linearizable per key (40 seeds)', () => {
    const failures: string[] = [];
    for (let seed = 1; seed <= 40; seed++) {
      const v = scanRun(seed);
      if (!v.ok) failures.push(`seed ${seed}: ${v.problems[0]}`);
    }
    expect(failures).toEqual([]);
  }, 120_000);

  it('catches a broken build: scans served without the read lease (a cut-off owner scans stale values)', () => {
    let failing: number | null = null;
    for (let seed = 1; seed <= 30 && failing === null; seed++) if (!scanRun(seed, { scanNoLease: true }, ['isolate']).ok) failing = seed;
    expect(failing, 'no failing seed in 1..30').not.toBeNull();
    expect(scanRun(failing as number, undefined, ['isolate']).ok).toBe(true);
  }, 120_000);

  it('outside the clock assumption (an owner\'s clock stops while it runs), lease reads go stale: I6 carries weight', () => {
    let failing: number | null = null;
    for (let seed = 1; seed <= 20 && failing === null; seed++) if (!runSeed(seed, undefined, false, ['clock-stall']).ok) failing = seed;
    expect(failing).not.toBeNull();
  }, 60_000);
});
