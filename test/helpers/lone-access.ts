/**
 * An AccessService that owns every document itself (one node, no peers), in closed mode, on a settable clock: for
 * tests of the access layer's checks without a ring.
 */
import { pino } from 'pino';
import { AccessService, type DocStore } from '../../enclave/access/service.ts';
import type { PeerPool } from '../../enclave/cluster/peers.ts';

export function loneAccess(): { svc: AccessService; clock: { t: number }; stored: Map<string, Buffer> } {
  const clock = { t: 1_000_000 };
  const stored = new Map<string, Buffer>();
  const docs: DocStore = {
    owns: () => true,
    serving: true,
    readOwned: (k) => stored.get(k.toString('hex')) ?? null,
    putOwned: async (k, b) => void stored.set(k.toString('hex'), b),
    ownerOf: () => ({ id: 1n, addr: 'self' }),
    onOwnershipGained: () => undefined,
  };
  const svc = new AccessService({ docs, peers: {} as PeerPool, self: { id: 1n, addr: 'self' }, logger: pino({ level: 'silent' }) }, { mode: 'closed', now: () => clock.t });
  return { svc, clock, stored };
}
