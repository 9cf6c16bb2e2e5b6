// Fault tests with real processes (issue 11, docs/fault-testing.md): the four rows of the table,
// each a short Jepsen-style run (test/helpers/jepsen.ts): SDK clients doing random get / put / delete /
// compare-and-set with unique values on a local sealed ring, a fault schedule against the processes,
// healing, a final read of every key through every node, then the checks (per-key linearizability, no
// acknowledged write lost, no version conflict, no failed write applied). On failure the message names the
// anomalies and the file holding the whole history. `npm run jepsen` runs the same schedules for longer.
import { describe, expect, it } from 'vitest';
import { runJepsen, type RunResult } from './helpers/jepsen.ts';
import { schedules } from './jepsen/schedules.ts';

const seed = Number(process.env.EKV_JEPSEN_SEED ?? 1);
/** Only each run's summary (its fault log is in it); EKV_JEPSEN_VERBOSE=1 prints every fault as it happens. */
const log = (line: string): void => {
  if (process.env.EKV_JEPSEN_VERBOSE || / seed \d+: /.test(line)) console.log(line);
};

function expectClean(r: RunResult): void {
  // The run did something: operations acknowledged, and the fault happened (else the test proves nothing).
  expect(r.verdict.counts.ok, r.summary).toBeGreaterThan(20);
  expect(r.faults.length, r.summary).toBeGreaterThan(1);
  expect(r.verdict.anomalies, r.summary).toEqual({ nonLinearizableKeys: 0, lostWrites: 0, versionConflicts: 0, failedButApplied: 0, finalUnavailable: 0, undecided: 0 });
  expect(r.ok, r.summary).toBe(true); // also availability after healing, for the schedules that demand it (row 2)
}

describe('fault tests with real processes (issue 11)', () => {
  it('row 1: an owner\'s enclave paused (SIGSTOP) past failure detection, resumed, later killed', async () => {
    expectClean(await runJepsen({ ...schedules.pause.options({ seed, short: true }), log }));
  }, 150_000);

  it('row 2: the host proxy of a node killed -9 and started again (its own process)', async () => {
    const r = await runJepsen({ ...schedules.host.options({ seed, short: true }), log });
    expectClean(r);
    expect(r.verdict.availability, r.summary).toEqual({ unwritableAfterHeal: 0, finalPartial: 0 });
    expect(r.facts.unreachableWhileHostDown, r.summary).toBeGreaterThan(0); // the fault took hold
  }, 150_000);

  // Row 3 was skipped as BLOCKED for a stall after boot fencing; the cause was a restarted node alone on the Chord
  // ring (or stuck joining through a node that was joining too), now fixed by enclave/cluster/rejoin.ts.
  it('row 3: rolling kill -9 of owners, never more than R-1 at once, with SDK retries', async () => {
    expectClean(await runJepsen({ ...schedules.rolling.options({ seed, short: true }), log }));
  }, 150_000);

  it('row 4: the whole ring crashes and comes back one node at a time, non-holders of a key first', async () => {
    expectClean(await runJepsen({ ...schedules.restart.options({ seed, short: true }), log }));
  }, 180_000);
});
