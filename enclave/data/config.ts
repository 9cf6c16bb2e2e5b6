// Settings of the data core, in ticks of the enclave's own monotonic clock (the
// driver decides how long a tick is), with the relations between them checked.
import { DataError } from './errors.ts';

export interface DataConfig {
  /** R: members of a range's configuration (owner + R-1 successors). */
  replicas: number;
  /** S: fixed ranges of the key space. */
  shards: number;
  /** L: a member that grants a read lease refuses to help elect another owner for this long, on its clock. */
  leaseTicks: number;
  /** ρ in parts per million: the bound on each enclave clock's drift rate (I6 in docs/consistency.md). */
  driftPpm: number;
  /** Subtracted from the owner's lease for the time a read takes between the check and the answer. */
  leaseMarginTicks: number;
  /** How often an owner renews its lease. */
  renewTicks: number;
  heartbeatTicks: number;
  /**
   * Optional (absent or 1: every heartbeat carries every configuration). N > 1: a heartbeat to a peer carries
   * only the configurations newer than that peer reported (its epochs, on its own heartbeats) within the last
   * two heartbeat periods from its current boot and incarnation, and every configuration when there is no
   * such report and on every N-th heartbeat (docs/consistency.md, "Heartbeats").
   */
  heartbeatFullEvery?: number;
  /** A peer not heard from for this long is taken as down for placement (never for safety). */
  suspectTicks: number;
  /** Unanswered replication, sync, install, prepare and accept messages are resent this often. */
  retryTicks: number;
  /** A proposal or an activation that has not finished by then is abandoned. */
  proposeTimeoutTicks: number;
  /** A failed proposal is retried after a random wait below this. */
  backoffTicksMax: number;
  /** Client sessions remembered per range; opening one more evicts the least recently used. */
  sessionsMax: number;
  /**
   * Sessions one principal may hold per range: opening one more evicts that principal's own least recently
   * used session (so no principal can push another's sessions out while the table has room).
   */
  sessionsPerPrincipalMax: number;
  /** Results remembered per session: requests in [floor, floor + windowMax). */
  windowMax: number;
  /**
   * Optional (0 or absent: off): a session used (opened, or a write of it received by the owner) less than this
   * long ago, on the owner's clock, is *busy*: another principal's open never evicts it, nor does an open of the
   * shared anonymous tag; an open that could only evict busy sessions is refused UNAVAILABLE instead (nothing
   * changes). Sessions the owner has not seen used since it became active count as used at its activation.
   */
  sessionIdleTicks?: number;
  /** Requests waiting per range at its owner; beyond, UNAVAILABLE (and per principal, a share of it: node.ts queuedPrincipalShare). */
  queuedMax: number;
  /**
   * Optional: the most bytes (keys plus values) one range may hold. A put that would take its range past it
   * is answered RANGE_FULL (remembered and replicated like CONFLICT, with no effect). The driver sets it so
   * that a whole range fits in one transfer.
   */
  rangeBytesMax?: number;
  /** Expired keys the owners of this node start collecting per tick, over all its ranges (a bound on work per tick). */
  expireBatchMax?: number;
  /** Test-only switches that break the protocol, so that tests can show the simulator catches it. */
  broken?: Readonly<BrokenFlags>;
}

export interface BrokenFlags {
  /** Members accept replication and grant leases to any sender at any epoch. */
  noFencing?: boolean;
  /** Members promise at once, ignoring the read leases they granted and their quiet period. */
  noLeaseWait?: boolean;
  /** The owner ignores request ids: every retry is a new write. */
  noDedup?: boolean;
  /** A restarted node trusts its sealed state without asking its peers what they witnessed of it. */
  noWitnessCheck?: boolean;
  /**
   * Peers admit any boot of a member (no admission, no supersession, no boot lease): a copy of a node started at
   * its current log position votes as the same member as the original.
   */
  noBootFence?: boolean;
  /** A get's answer claims to depend on no record (R1 broken): it may leave before what it shows is durable. */
  readsDependOnNothing?: boolean;
  /**
   * Expiry is each node's own business: the owner answers "absent" once its own deadline has passed (and compares
   * versions as if absent) without replicating anything; nothing is collected.
   */
  expiryLocalOnly?: boolean;
  /** The replicated expiry (the tombstone the owner writes at the deadline) is applied but never sealed in the log. */
  expiryNotDurable?: boolean;
  /**
   * A deadline travels as the sender's absolute tick (its `until`) and the receiver takes it as its own: clocks of
   * different nodes are compared (only the simulator passes entries by reference, so only it can show this).
   */
  absoluteDeadlines?: boolean;
  /** Scans (scan.ts) are served by an active owner whether or not its read lease is valid. */
  scanNoLease?: boolean;
  /**
   * Not a safety break, a cost control: each range renews its lease on its own schedule (as before renewals were
   * aligned), so an owner sends lease requests in as many ticks as it owns ranges.
   */
  renewApart?: boolean;
  /**
   * Not a safety break, a liveness control: a restarted boot does not count a retired member as admitting it
   * (B7c off), so a co-member's restart waits for a member that is gone for good (the B5 + leave deadlock).
   */
  retiredNotCounted?: boolean;
  /**
   * Not a safety break, a liveness control: a restarted boot counts a retired member as admitting it only with a
   * peer's answer that holds its witnesses, never from its own log's copy (B7c' off): the sole holder's restart
   * waits for ever (seed 130678).
   */
  retiredSelfNotCounted?: boolean;
}

/** Expired keys collected per tick by default. */
export const expireBatchDefault = 64;
/** The longest ttl a write may carry, in ticks (about 3.2 years of 10 ms ticks; safe with any inflation). */
export const ttlTicksMax = 10_000_000_000;

/**
 * The ticks a write's ttl is counted in (once, by the owner that applies it): stretched by the drift bound, so
 * that ticks counted on any clocks, each running at most ρ fast, add up to at least the ttl in real time. Nodes
 * then count down what is left on their own clocks, each from when it got the entry, and never stretch again:
 * the sum of ticks counted is never more than the real time elapsed·(1+ρ), so reaching it is never early.
 */
export function ttlTicksStretched(ticks: number, driftPpm: number): number {
  return Math.ceil((ticks * (1_000_000 + driftPpm)) / 1_000_000);
}

export const defaultDataConfig: Readonly<DataConfig> = Object.freeze({
  replicas: 3,
  shards: 64,
  leaseTicks: 200,
  driftPpm: 10_000,
  leaseMarginTicks: 5,
  renewTicks: 50,
  heartbeatTicks: 20,
  suspectTicks: 100,
  retryTicks: 30,
  proposeTimeoutTicks: 300,
  backoffTicksMax: 60,
  sessionsMax: 1024,
  sessionsPerPrincipalMax: 32,
  windowMax: 64,
  queuedMax: 4096,
});

function intIn(name: string, v: unknown, lo: number, hi: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new DataError('BAD_CONFIG', `${name} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
  }
}

/** The lease an owner may count on, on its own clock, from the moment it asked: L·(1−ρ)/(1+ρ) − margin. */
export function ownerLeaseTicks(c: DataConfig): number {
  const rho = c.driftPpm / 1e6;
  return Math.floor((c.leaseTicks * (1 - rho)) / (1 + rho)) - c.leaseMarginTicks;
}

export function validateDataConfig(c: DataConfig): Readonly<DataConfig> {
  intIn('replicas', c.replicas, 1, 7);
  intIn('shards', c.shards, 1, 1 << 16);
  intIn('leaseTicks', c.leaseTicks, 1, 1_000_000);
  intIn('driftPpm', c.driftPpm, 0, 100_000);
  intIn('leaseMarginTicks', c.leaseMarginTicks, 0, 1_000_000);
  intIn('renewTicks', c.renewTicks, 1, 1_000_000);
  intIn('heartbeatTicks', c.heartbeatTicks, 1, 1_000_000);
  if (c.heartbeatFullEvery !== undefined) intIn('heartbeatFullEvery', c.heartbeatFullEvery, 1, 1_000_000);
  intIn('suspectTicks', c.suspectTicks, 1, 1_000_000);
  intIn('retryTicks', c.retryTicks, 1, 1_000_000);
  intIn('proposeTimeoutTicks', c.proposeTimeoutTicks, 1, 1_000_000);
  intIn('backoffTicksMax', c.backoffTicksMax, 1, 1_000_000);
  intIn('sessionsMax', c.sessionsMax, 1, 1 << 20);
  intIn('sessionsPerPrincipalMax', c.sessionsPerPrincipalMax, 1, c.sessionsMax);
  intIn('windowMax', c.windowMax, 1, 1 << 16);
  if (c.sessionIdleTicks !== undefined) intIn('sessionIdleTicks', c.sessionIdleTicks, 0, 100_000_000);
  intIn('queuedMax', c.queuedMax, 1, 1 << 20);
  if (c.expireBatchMax !== undefined) intIn('expireBatchMax', c.expireBatchMax, 1, 1 << 20);
  if (c.rangeBytesMax !== undefined) intIn('rangeBytesMax', c.rangeBytesMax, 1, Number.MAX_SAFE_INTEGER);
  // A lease the owner cannot renew before it runs out is useless, and a negative one is a config error.
  if (ownerLeaseTicks(c) <= c.renewTicks) throw new DataError('BAD_CONFIG', 'the owner lease must outlast renewTicks');
  if (c.suspectTicks <= 2 * c.heartbeatTicks) throw new DataError('BAD_CONFIG', 'suspectTicks must exceed two heartbeats');
  return Object.freeze({ ...c });
}
