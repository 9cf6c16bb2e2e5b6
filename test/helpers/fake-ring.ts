// A stand-in for the Chord ring driver in tests of enclave/cluster/rejoin.ts: its view (status, successors,
// predecessor) set by hand, its rejoins recorded (a rejoin names the node it joined through as the successor).
import type { RingDriver } from '../../enclave/cluster/ring-driver.ts';

export interface Ref { id: bigint; addr: string }

export function fakeRing(self: Ref) {
  const joins: Ref[] = [];
  /** Times it gave up joining and stood alone (RingDriver.standAlone). */
  const alone: number[] = [];
  const ring = {
    self,
    core: { status: 'active' as string, successors: [] as Ref[], predecessor: null as Ref | null },
    rejoin(via: Ref) {
      joins.push(via);
      ring.core.successors = [via];
    },
    standAlone() {
      if (ring.core.status !== 'joining') return;
      alone.push(Date.now());
      ring.core.status = 'active';
      ring.core.successors = [];
      ring.core.predecessor = null;
    },
  };
  return { ring, joins, alone, driver: ring as unknown as RingDriver };
}

/** A ring id as the status answer carries it (32 bytes). */
export const idBytes = (n: bigint): Uint8Array => Buffer.from(n.toString(16).padStart(64, '0'), 'hex');

/** Polls `cond` every 5 ms until it holds or `ms` pass (the caller asserts afterwards). */
export async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
}
