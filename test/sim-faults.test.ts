// The fault simulator of the data layer (test/sim-faults/): a short run of the random schedule must be
// linearizable with no acknowledged write lost, a seed must replay exactly, and each deliberately broken build
// (test-only flags) must produce a failing seed, so we know the simulator can fail.
import { describe, expect, it } from 'vitest';
import { checkRun } from './sim-faults/check.ts';
import { runSeed } from './sim-faults/run.ts';
import { defaultSimOptions, type FaultName, FaultSim, type SimOptions } from './sim-faults/sim.ts';

// 100 seeds here keep the suite short; `npm run sim:faults -- --seeds 300` (or more) is the longer run.
const seedsShort = 100;

describe('fault simulator (issue 11)', () => {
  it(`${seedsShort} seeds of the random fault schedule: linearizable per key, no acknowledged write lost`, () => {
    const failures: string[] = [];
    let ops = 0;
    let faults = 0;
    let rollbacks = 0;
    let detected = 0;
    let clones = 0;
    let expired = 0;
    const exhausted: string[] = [];
    for (let seed = 1; seed <= seedsShort; seed++) {
      const v = runSeed(seed);
      expired += v.expired;
      rollbacks += v.faults['kill-rollback'] ?? 0;
      detected += v.faults['rollback-detected'] ?? 0;
      clones += v.faults.clone ?? 0;
      ops += v.ops;
      faults += Object.values(v.faults).reduce((a, b) => a + b, 0);
      // A key the checker could not search to the end (many writes of unknown outcome plus optional expiries) is
      // neither proven nor refuted: counted apart, and it must stay rare.
      for (const p of v.problems) (p.includes('search exhausted') ? exhausted : failures).push(`seed ${seed} (npm run sim:faults -- --seed ${seed}): ${p}`);
    }
    expect(failures).toEqual([]);
    expect(exhausted.length, exhausted.join('\n')).toBeLessThanOrEqual(3);
    // The run must have done something: operations checked and faults injected in every seed on average.
    expect(ops / seedsShort).toBeGreaterThan(100);
    expect(faults / seedsShort).toBeGreaterThan(5);
    // Rollbacks (a prefix of the log) happen, and restarted nodes find them from their peers' witnesses.
    expect(rollbacks).toBeGreaterThan(10);
    expect(detected).toBeGreaterThan(rollbacks / 2);
    // Clones at the exact durable position run beside their originals (docs/consistency.md, "Boots and clones").
    expect(clones).toBeGreaterThan(10);
    // Puts with a ttl expire (tombstones acknowledged), and the checker saw each expiry's window.
    expect(expired / seedsShort).toBeGreaterThan(5);
  }, 300_000);

  it('replays a seed exactly', () => {
    const a = new FaultSim({ ...defaultSimOptions, seed: 7 }).run();
    const b = new FaultSim({ ...defaultSimOptions, seed: 7 }).run();
    expect(JSON.stringify(b.history)).toBe(JSON.stringify(a.history));
    expect(b.faults).toEqual(a.faults);
    expect(checkRun(a).ok).toBe(true);
  });

  // Each broken build against the fault mix of the table row it reopens; the first failing seed is enough.
  // (An optional fourth field widens the seed search for flags whose bug needs a rarer schedule.)
  const broken: Array<[string, SimOptions['broken'], FaultName[] | undefined, number?]> = [
    ['fencing off (row 1: a paused owner resumes and writes)', { noFencing: true }, ['stale-owner']],
    ['lease wait off (row 1: a cut-off owner keeps reading)', { noLeaseWait: true }, ['isolate']],
    ['dedup off (row 2: retries applied twice)', { noDedup: true }, undefined],
    ['ack before persist (row 3: acknowledged, not durable)', { ackBeforePersist: true }, ['whole-ring-restart', 'kill-pair']],
    ['boot fence off (a copy of a running node at its exact log position votes as the same member)', { noBootFence: true }, ['clone']],
    // Expiry (docs/consistency.md "Expiry"; the tombstone not sealed, which a whole-ring restart resurrects, is
    // shown by test/data-expiry.test.ts: in this mix a later write or a reconfiguration's snapshot usually seals over it).
    ['expiry not replicated (each owner answers "absent" by its own clock alone)', { expiryLocalOnly: true }, undefined],
    ['deadlines compared across nodes (a range moved with its sender\'s absolute deadline: early expiry)', { absoluteDeadlines: true }, ['partition', 'kill'], 80],
  ];
  for (const [name, flags, mix, seedsMax = 30] of broken) {
    it(`catches a broken build: ${name}`, () => {
      let failing: number | null = null;
      for (let seed = 1; seed <= seedsMax && failing === null; seed++) if (!runSeed(seed, flags, false, mix).ok) failing = seed;
      expect(failing, `no failing seed in 1..${seedsMax}`).not.toBeNull();
      // The same seed passes on the correct build: the failure is the flag's doing.
      expect(runSeed(failing as number, undefined, false, mix).ok).toBe(true);
    }, 120_000);
  }

  // R1 (docs/durability.md): a get's answer leaves once its range's records are durable. With the tag broken
  // (readsDependOnNothing) a one-member range shows a write a crash then loses; at R = 1 on 3 nodes about one
  // seed in fifteen fails (seed 10 when it was written; merges of other work move schedules, so it searches).
  it('catches a broken build: reads that wait for no record (R1), one replica', () => {
    const shape = { replicas: 1, nodes: 3 };
    let failing: number | null = null;
    for (let seed = 1; seed <= 80 && failing === null; seed++) if (!runSeed(seed, { readsDependOnNothing: true }, false, undefined, shape).ok) failing = seed;
    expect(failing, 'no failing seed in 1..80').not.toBeNull();
    expect(runSeed(failing as number, undefined, false, undefined, shape).ok).toBe(true);
  }, 240_000);

  // Seeds that failed during development, each with the fault mix it failed under (and the broken build, if it
  // was one): they must pass on the correct build, and a broken one must still fail, so the seed keeps its bite.
  // `ttl: false`: found before the workload had puts with a ttl (a seed's schedule depends on its workload).
  const regressions: Array<{ seed: number; mix: FaultName[] | undefined; why: string; broken?: SimOptions['broken']; ttl?: boolean }> = [
    // Seed 186 of kill,pause,partition,net-lossy found this first; later changes to the core (session opens, R8)
    // moved its schedule off the bug, then seed 12 of the kill-only mix kept it until boot fencing's messages moved
    // the schedules again: seed 9 of the whole mix; heartbeats carrying only what a peer lacks (issue 15) moved seed
    // 9 off it: now seed 168 (which failed the broken build before that change too; checked both ways below).
    { seed: 168, mix: undefined, broken: { noWitnessCheck: true }, ttl: false, why: 'a node rolled back (prefix of its log) votes again with forgotten promises: a key\'s history is not linearizable' },
    // (Seed 4 until lease renewals were aligned (issue 15), which moved the schedules: then 2, now 7.)
    { seed: 7, mix: ['clone'], broken: { noBootFence: true }, why: 'a copy of a running node at its exact log position (the original hidden from its peers meanwhile) passes the witness check and votes as the same member: a read misses an acknowledged write' },
  ];
  for (const r of regressions) {
    it(`regression seed ${r.seed} (${r.mix?.join(',') ?? 'all faults'}): ${r.why}`, () => {
      const v = runSeed(r.seed, undefined, false, r.mix, undefined, { ttl: r.ttl ?? true });
      expect(v.problems).toEqual([]);
      // (A broken build takes another path through the same seed: its schedule diverges once it behaves differently.)
      if (r.broken) expect(runSeed(r.seed, r.broken, false, r.mix, undefined, { ttl: r.ttl ?? true }).ok).toBe(false);
    }, 60_000);
  }

  // Found by the 2,000-seed run of session 8 (seeds 80000-81999: 2 failed, liveness only): a member left
  // gracefully while a configuration still named it (one decided after it stopped), and another member of that
  // range then restarted. Boot fencing (B5) made the restarted member wait for the gone one's admission for
  // ever. Fixed by retirement (docs/consistency.md, "Retirement", B7): a leaving node retires durably and says
  // so, its peers remember and pass it on, and a restarted boot counts a member known retired for a lease as
  // admitting it. The two original seeds pass (their schedules moved with the fix); the focused seeds below
  // fail with the control `retiredNotCounted` (B7c off: "n4/1 boot ... waits for n0 to admit it", n0 GONE).
  it('regression: a restart while a retired member is still in a configuration does not wait for it (B5 + leave; seeds 80890, 81927)', () => {
    for (const seed of [80890, 81927]) expect(runSeed(seed).problems).toEqual([]);
  }, 60_000);
  it('regression: retirement under leave, kill and whole-ring restarts (seeds 15, 36, 86; each fails with B7c off)', () => {
    const mix: FaultName[] = ['leave', 'kill', 'whole-ring-restart'];
    for (const seed of [15, 36, 86]) {
      expect(runSeed(seed, undefined, false, mix).problems).toEqual([]);
      expect(runSeed(seed, { retiredNotCounted: true }, false, mix).ok).toBe(false);
    }
  }, 120_000);

  // Found by the 300-seed run from 130000 (liveness only; it failed the same way at older commits): range 0's
  // configuration [n3, n0, n4]; n3 retired at once (retire-early) while partitioned from n0, so only n4 heard its
  // retiring heartbeat and held its witnesses; then a whole-ring restart. n0 passed its check with n4's answer
  // (held); n4 had no peer that held them and "waits for n3 to admit it" for ever, and with it ranges 0 and 1.
  // Fixed by B7c' (docs/consistency.md, "Retirement"): the holder keeps what the retired member witnessed of itself,
  // and its own restart counts the retired member with that copy, checked as an answer (B6). The control
  // `retiredSelfNotCounted` (B7c' off) fails it as before.
  it('regression seed 130678: the sole holder of a retired member\'s witnesses restarts without waiting for it (B7c\')', () => {
    expect(runSeed(130678).problems).toEqual([]);
    const broken = runSeed(130678, { retiredSelfNotCounted: true });
    expect(broken.problems.some((p) => p.startsWith('unavailable at the end'))).toBe(true);
  }, 60_000);

  // Seed 90129 of leave,clone,kill,partition (liveness only) was a schedule outside the fault model, which the
  // simulator's amnesia budget let through: range 3's configuration e2 [n0, n4, n1]; n0 left and retired (a copy
  // gone, B7d); n4 decided e3 [n4, n1, n2], which only n4 learnt, and was then rolled back (detected: a new
  // incarnation, its old one lost). The budget looked only at the newest configuration anywhere (e3, every member
  // up) while n1 still held e2, of which two members of three were then lost: no majority of e2 can decide anything
  // again, and n1 alone cannot know e3 was chosen (docs/consistency.md, "What is not guaranteed"). The budget now
  // also counts every configuration a member of it still holds as its newest; `budgetNewestOnly` is the old one.
  it('regression seed 90129 (leave,clone,kill,partition): no second loss while a configuration its members hold still names a retired member', () => {
    const mix: FaultName[] = ['leave', 'clone', 'kill', 'partition'];
    expect(runSeed(90129, undefined, false, mix).problems).toEqual([]);
    const old = checkRun(new FaultSim({ ...defaultSimOptions, seed: 90129, mix, ttl: true, budgetNewestOnly: true }).run());
    expect(old.problems).toEqual(['unavailable at the end: final read of k0 never answered']);
  }, 60_000);

  // Scans (docs/scans.md) in the workload: each scanned value is a get linearized within the scan, so no scan
  // returns a value older than a write acknowledged before it started; and a scan that skips the lease is caught.
  // (Without ttl puts: with expiries, which the checker treats as optional operations, and many scanned reads, the
  // search exhausts on some keys; the second test runs them together and counts only decided keys.)
  const scanRun = (seed: number, broken?: SimOptions['broken'], mix?: FaultName[], ttl = false) =>
    checkRun(new FaultSim({ ...defaultSimOptions, seed, scans: 0.15, ttl, ...(broken ? { broken } : {}), ...(mix ? { mix } : {}) }).run());
  it('scans in the workload: every scanned value linearizable per key (30 seeds)', () => {
    const failures: string[] = [];
    // A key whose history the checker could not search to the end (many writes of unknown outcome plus optional
    // expiries) is neither proven nor refuted: such seeds are counted apart and must stay rare.
    const exhausted: string[] = [];
    for (let seed = 1; seed <= 30; seed++) {
      const v = scanRun(seed);
      for (const p of v.problems) (p.includes('search exhausted') ? exhausted : failures).push(`seed ${seed}: ${p}`);
    }
    expect(failures).toEqual([]);
    expect(exhausted.length, exhausted.join('\n')).toBeLessThanOrEqual(2);
  }, 120_000);

  it('scans with expiring values: no scanned value contradicts an expiry (15 seeds, keys the checker decides)', () => {
    const failures: string[] = [];
    let exhausted = 0;
    for (let seed = 1; seed <= 15; seed++) {
      const v = scanRun(seed, undefined, undefined, true);
      exhausted += v.problems.filter((p) => p.includes('search exhausted')).length;
      const real = v.problems.filter((p) => !p.includes('search exhausted'));
      if (real.length > 0) failures.push(`seed ${seed}: ${real[0]}`);
    }
    expect(failures).toEqual([]);
    expect(exhausted).toBeLessThan(15 * 5 / 3); // most keys are decided
  }, 180_000);

  // Found while choosing how scans treat expiry: skipping a value as soon as its deadline passed here (without
  // waiting for the replicated tombstone, as a get waits) lets a later owner, whose deadline is later, serve it
  // again after a scan said it was gone (first found at seed 6; seeds 3, then 27, as the workload changed; 44 since lease renewals were aligned). Kept as a
  // broken build the simulator must catch, on a seed the correct build passes.
  it('catches a broken build: scans that call a value gone before its expiry is replicated', () => {
    const problems = (seed: number, broken?: SimOptions['broken']) => scanRun(seed, broken, undefined, true).problems.filter((p) => !p.includes('search exhausted'));
    let failing: number | null = null;
    for (let seed = 1; seed <= 80 && failing === null; seed++) if (problems(seed, { scanSkipsExpiredHere: true }).length > 0) failing = seed;
    expect(failing, 'no failing seed in 1..80').not.toBeNull();
    expect(problems(failing as number)).toEqual([]);
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
