// The ring node's settings, in ticks (the caller decides how long a tick is).
import { idBits, successorsMax } from './constants.ts';
import { RingError } from './errors.ts';

export interface RingConfig {
  /** r: length of the successor list; lookups survive r-1 consecutive failures. */
  successorsMax: number;
  /** Finger table size; 256 for SHA-256 identifiers (smaller only in tests of the arithmetic). */
  fingerBits: number;
  /** Period of stabilize (ask the successor for its predecessor and successor list, then notify it). */
  stabilizeTicks: number;
  /** Period of fix_fingers (refresh the next stale finger with one lookup). */
  fixFingersTicks: number;
  /**
   * Optional (absent: fixFingersTicks, no slowing down): the period of fix_fingers once a whole round of the
   * table changed no finger, until a finger, the successor list or a join changes something again (then back
   * to fixFingersTicks at once). Fingers are only a routing shortcut (successor lists give correctness), so a
   * settled ring can refresh them far less often.
   */
  fixFingersIdleTicks?: number;
  /** Period of check_predecessor (ping it; forget it on timeout). */
  checkPredecessorTicks: number;
  /** A request unanswered after this many ticks counts as one miss for its peer. */
  rpcTimeoutTicks: number;
  /**
   * A peer with this many consecutive misses (no message from it in between) is taken
   * as dead and forgotten. 1 forgets on the first lost packet, which on a lossy network
   * splits rings; 2 tolerates single losses at the price of a slower detection.
   */
  suspectAfterMisses: number;
  /** A lookup that has not finished within this many ticks fails. */
  lookupTimeoutTicks: number;
  /** A join whose lookup fails is retried after this many ticks. */
  joinRetryTicks: number;
}

export const defaultRingConfig: Readonly<RingConfig> = Object.freeze({
  successorsMax: 8,
  fingerBits: idBits,
  stabilizeTicks: 10,
  fixFingersTicks: 2,
  checkPredecessorTicks: 10,
  rpcTimeoutTicks: 5,
  suspectAfterMisses: 2,
  lookupTimeoutTicks: 60,
  joinRetryTicks: 20,
});

function intIn(name: string, v: unknown, lo: number, hi: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new RingError('BAD_CONFIG', `${name} must be an integer in [${lo}, ${hi}], got ${String(v)}`);
  }
}

/** Checks every setting and the relations between them; returns a frozen copy. */
export function validateConfig(c: RingConfig): Readonly<RingConfig> {
  intIn('successorsMax', c.successorsMax, 1, successorsMax);
  intIn('fingerBits', c.fingerBits, 1, idBits);
  intIn('stabilizeTicks', c.stabilizeTicks, 1, 1_000_000);
  intIn('fixFingersTicks', c.fixFingersTicks, 1, 1_000_000);
  if (c.fixFingersIdleTicks !== undefined) {
    intIn('fixFingersIdleTicks', c.fixFingersIdleTicks, 1, 1_000_000);
    if (c.fixFingersIdleTicks < c.fixFingersTicks) throw new RingError('BAD_CONFIG', 'fixFingersIdleTicks must be at least fixFingersTicks');
  }
  intIn('checkPredecessorTicks', c.checkPredecessorTicks, 1, 1_000_000);
  intIn('rpcTimeoutTicks', c.rpcTimeoutTicks, 1, 1_000_000);
  intIn('suspectAfterMisses', c.suspectAfterMisses, 1, 100);
  intIn('lookupTimeoutTicks', c.lookupTimeoutTicks, 1, 1_000_000);
  intIn('joinRetryTicks', c.joinRetryTicks, 1, 1_000_000);
  // A lookup must be able to absorb a few dead hops, each costing one rpc timeout.
  if (c.lookupTimeoutTicks < 2 * c.rpcTimeoutTicks) {
    throw new RingError('BAD_CONFIG', 'lookupTimeoutTicks must be at least 2 * rpcTimeoutTicks');
  }
  return Object.freeze({ ...c });
}
