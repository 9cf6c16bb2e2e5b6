// The enclave's recovery gate in process (enclave/recovery/gate.ts, docs/recovery.md): in recovery mode it
// refuses data operations, takes member signatures one at a time (typed refusals in the message), opens only at
// k distinct members, seals the new generation before it lets the node boot on, and puts the new ring id (with
// the previous one and the generation) into the ring credential the server and peers share. A signature made for
// an earlier boot of the same state (another nonce) does not count.
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { generateIdentity, identityFromKey } from '../client/identity.ts';
import { EkvError } from '../protocol/errors.ts';
import { recoveredRingId, recoveryPolicy, signOpen, type OpenStatement } from '../protocol/recovery.ts';
import { RecoveryGate } from '../enclave/recovery/gate.ts';
import type { Generation } from '../enclave/recovery/generation.ts';

const members = [0, 1, 2].map(() => identityFromKey(generateIdentity()));
const mallory = identityFromKey(generateIdentity());
const policy = recoveryPolicy(members.map((m) => m.principal.text), 2);

function gate() {
  const ring = { id: randomBytes(32), macKey: randomBytes(32) };
  const sealed: Generation[] = [];
  const g = new RecoveryGate({
    policy, ring, sealed: null, node: randomBytes(32),
    digest: () => ({ lastSeq: 7, entries: 3, stateHash: randomBytes(32) }), figures: () => ({ lastSeq: 8, entries: 3 }),
    seal: async (x) => void sealed.push(x), serving: () => true, logger: pino({ level: 'silent' }),
  }, true);
  return { g, ring, sealed };
}

function statementOf(g: RecoveryGate, next: Buffer): OpenStatement {
  const s = g.status();
  return { prevRing: s.ring as Buffer, generation: s.gen as number, node: s.node as Buffer, digest: s.digest as Buffer, nonce: s.nonce as Buffer, next };
}

async function submit(g: RecoveryGate, signer: (typeof members)[number], st: OpenStatement): Promise<string> {
  const sig = signOpen(signer, st);
  try {
    const r = await g.handle('rcvOpen', { s: sig.statement, m: sig.member, sig: sig.sig });
    return r.opened ? 'OPENED' : `NEED ${String(r.need)}`;
  } catch (err) {
    if (err instanceof EkvError) return err.message.split(':')[0] as string;
    throw err;
  }
}

describe('RecoveryGate', () => {
  it('refuses data, opens at k = 2 distinct members, seals, then switches the ring id', async () => {
    const { g, ring, sealed } = gate();
    const oldId = Buffer.from(ring.id);
    expect(() => g.refuse()).toThrow(/RECOVERY_MODE/);
    const next = randomBytes(32);
    const st = statementOf(g, next);
    expect(await submit(g, mallory as (typeof members)[number], st)).toBe('NOT_MEMBER');
    expect(await submit(g, members[0]!, st)).toBe('NEED 1');
    expect(await submit(g, members[0]!, st)).toBe('DUPLICATE_SIGNER');
    expect(await submit(g, members[1]!, { ...st, next: randomBytes(32) })).toBe('WRONG_NEXT'); // the first signer chose `next`
    expect(g.inRecovery).toBe(true);
    expect(sealed).toHaveLength(0);
    expect(await submit(g, members[1]!, st)).toBe('OPENED');
    await g.opened;
    expect(g.inRecovery).toBe(false);
    expect(sealed).toHaveLength(1);
    expect(sealed[0]).toMatchObject({ generation: 1, previous: [oldId] });
    expect(ring.id).toEqual(recoveredRingId(oldId, 0, next));
    expect((ring as { previous?: Buffer[] }).previous).toEqual([oldId]);
    expect(g.status()).toMatchObject({ mode: 'open', gen: 1, lastSeq: 8 });
    expect(await submit(g, members[2]!, st)).toBe('NOT_IN_RECOVERY');
  });

  it('a signature for an earlier boot (another nonce) is REPLAYED; for other state, WRONG_DIGEST', async () => {
    const { g } = gate();
    const st = statementOf(g, randomBytes(32));
    expect(await submit(g, members[0]!, { ...st, nonce: randomBytes(32) })).toBe('REPLAYED');
    expect(await submit(g, members[0]!, { ...st, digest: randomBytes(32) })).toBe('WRONG_DIGEST');
    expect(g.status().signers).toEqual([]);
  });
});
