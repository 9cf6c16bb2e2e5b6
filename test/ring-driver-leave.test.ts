// A graceful leave's messages go out before the enclave closes its peer connections (enclave/enclave.ts stop):
// RingDriver.leave resolves only once the neighbours answered (or after its wait), never while a send is out.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { PeerPool } from '../enclave/cluster/peers.ts';
import { RingDriver } from '../enclave/cluster/ring-driver.ts';

function driverWithNeighbour(): { ring: RingDriver; calls: Array<{ addr: string; type: unknown }>; answer: () => void } {
  const calls: Array<{ addr: string; type: unknown }> = [];
  const pending: Array<() => void> = [];
  const peers = {
    onWrongIdentity: null,
    call: (addr: string, _op: string, args: { m: unknown }) => {
      calls.push({ addr, type: (args.m as { type?: unknown } | null)?.type });
      return new Promise((resolve) => pending.push(() => resolve({})));
    },
  } as unknown as PeerPool;
  const ring = new RingDriver({ id: 1n, addr: 'self:1' }, peers, pino({ level: 'silent' }));
  // A ring of one that a neighbour notified: the neighbour is its predecessor and successor.
  ring.core.step({ type: 'notify', from: { id: 2n, addr: 'peer:2' } });
  ring.flush();
  calls.length = 0;
  return { ring, calls, answer: () => pending.splice(0).forEach((f) => f()) };
}

describe('RingDriver.leave', () => {
  it('resolves only after the leave messages were answered', async () => {
    const { ring, calls, answer } = driverWithNeighbour();
    let done = false;
    const left = ring.leave(5000).then(() => (done = true));
    expect(calls.map((c) => c.type)).toContain('leave');
    await new Promise((r) => setTimeout(r, 50));
    expect(done).toBe(false); // still out: the caller must not close the connections yet
    answer();
    await left;
    expect(done).toBe(true);
  });

  it('does not wait past its bound for a neighbour that never answers', async () => {
    const { ring } = driverWithNeighbour();
    const t0 = Date.now();
    await ring.leave(100);
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});
