// The signed open of a stopped ring (issue 12, section 2; protocol/recovery.ts, docs/recovery.md): k distinct
// recovery members must sign exactly the statement the recovering node expects. Every refusal has its code:
// too few, a non-member, a duplicate, a replay of an old open (another nonce), another digest, ring, generation,
// node or new identity, a forged signature, a malformed statement. Ed25519 and P-256 members both sign.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateIdentity, identityFromKey } from '../client/identity.ts';
import {
  decodeOpenStatement, digestHash, encodeOpenStatement, openStatementBytes, policyDigest, recoveredRingId, recoveryPolicy, RecoveryError,
  signOpen, stateHash, verifyOpen, verifyOpenSignature, type OpenSignature, type OpenStatement,
} from '../protocol/recovery.ts';

const alice = identityFromKey(generateIdentity('ed25519'));
const bob = identityFromKey(generateIdentity('p256'));
const carol = identityFromKey(generateIdentity('ed25519'));
const mallory = identityFromKey(generateIdentity('ed25519'));
const policy = recoveryPolicy([alice, bob, carol].map((m) => m.principal.text), 2);

function statement(over: Partial<OpenStatement> = {}): OpenStatement {
  return { prevRing: randomBytes(32), generation: 4, node: randomBytes(32), digest: randomBytes(32), nonce: randomBytes(32), next: randomBytes(32), ...over };
}

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'OK';
  } catch (err) {
    if (err instanceof RecoveryError) return err.code;
    throw err;
  }
}

describe('verifyOpen', () => {
  const s = statement();
  const a = signOpen(alice, s);
  const b = signOpen(bob, s);

  it('opens with 2 of 3 distinct members (Ed25519 and P-256)', () => {
    expect(verifyOpen(policy, s, [a, b]).map((p) => p.text)).toEqual([alice.principal.text, bob.principal.text]);
    expect(verifyOpen(policy, s, [a, b, signOpen(carol, s)])).toHaveLength(3);
  });

  it('refuses one signature (TOO_FEW), the same member twice (DUPLICATE_SIGNER), a non-member (NOT_MEMBER)', () => {
    expect(codeOf(() => verifyOpen(policy, s, [a]))).toBe('TOO_FEW');
    expect(codeOf(() => verifyOpen(policy, s, []))).toBe('TOO_FEW');
    expect(codeOf(() => verifyOpen(policy, s, [a, a]))).toBe('DUPLICATE_SIGNER');
    expect(codeOf(() => verifyOpen(policy, s, [a, signOpen(mallory, s)]))).toBe('NOT_MEMBER');
  });

  it('refuses a replayed old open: the same ring, generation, node and digest, signed for an earlier boot (REPLAYED)', () => {
    const old = statement({ ...s, nonce: randomBytes(32) }); // what the members signed at the last recovery of this state
    const captured = [signOpen(alice, old), signOpen(bob, old)];
    expect(codeOf(() => verifyOpen(policy, old, captured))).toBe('OK'); // valid then
    expect(codeOf(() => verifyOpen(policy, s, captured))).toBe('REPLAYED'); // not now
  });

  it('refuses a statement for other state, another ring, generation, node or new identity', () => {
    const cases: Array<[Partial<OpenStatement>, string]> = [
      [{ digest: randomBytes(32) }, 'WRONG_DIGEST'],
      [{ prevRing: randomBytes(32) }, 'WRONG_RING'],
      [{ generation: 3 }, 'WRONG_GENERATION'],
      [{ node: randomBytes(32) }, 'WRONG_NODE'],
      [{ next: randomBytes(32) }, 'WRONG_NEXT'],
    ];
    for (const [over, code] of cases) {
      const signedOther = signOpen(alice, { ...s, ...over });
      expect(codeOf(() => verifyOpen(policy, s, [signedOther, b]))).toBe(code);
    }
  });

  it('refuses a forged or transplanted signature (BAD_SIGNATURE) and malformed input (MALFORMED)', () => {
    const forged: OpenSignature = { ...a, sig: Buffer.from(a.sig).fill(1, 0, 8) };
    expect(codeOf(() => verifyOpenSignature(policy, s, forged))).toBe('BAD_SIGNATURE');
    expect(codeOf(() => verifyOpenSignature(policy, s, { ...b, member: alice.principal.bytes }))).toBe('BAD_SIGNATURE'); // bob's signature claimed as alice's
    expect(codeOf(() => verifyOpenSignature(policy, s, { ...a, statement: a.statement.subarray(1) }))).toBe('MALFORMED');
    expect(codeOf(() => verifyOpenSignature(policy, s, { ...a, sig: a.sig.subarray(1) }))).toBe('MALFORMED');
    expect(codeOf(() => verifyOpenSignature(policy, s, { ...a, member: Buffer.of(9, 9) }))).toBe('MALFORMED');
    const wrongDomain = Buffer.from(a.statement);
    wrongDomain[0] = 0x45;
    expect(codeOf(() => verifyOpenSignature(policy, s, { ...a, statement: wrongDomain }))).toBe('MALFORMED');
    expect(codeOf(() => verifyOpen(policy, s, Array.from({ length: 17 }, () => a)))).toBe('MALFORMED');
  });

  it('a signature of the same bytes made for another purpose does not count (domain separation)', () => {
    const bare = encodeOpenStatement(s).subarray(20);
    const sig: OpenSignature = { statement: encodeOpenStatement(s), member: alice.principal.bytes, sig: alice.sign(bare) };
    expect(codeOf(() => verifyOpenSignature(policy, s, sig))).toBe('BAD_SIGNATURE');
  });
});

describe('the policy, the statement layout, identities and digests', () => {
  it('refuses unusable policies', () => {
    const t = [alice, bob].map((m) => m.principal.text);
    expect(codeOf(() => recoveryPolicy([], 1))).toBe('BAD_POLICY');
    expect(codeOf(() => recoveryPolicy(t, 0))).toBe('BAD_POLICY');
    expect(codeOf(() => recoveryPolicy(t, 3))).toBe('BAD_POLICY');
    expect(codeOf(() => recoveryPolicy([t[0] as string, t[0] as string], 1))).toBe('BAD_POLICY');
    expect(codeOf(() => recoveryPolicy(['ekv1nope'], 1))).toBe('BAD_POLICY');
    expect(policyDigest(recoveryPolicy(t, 1))).toEqual(policyDigest(recoveryPolicy([...t].reverse(), 1)));
    expect(policyDigest(recoveryPolicy(t, 1))).not.toEqual(policyDigest(recoveryPolicy(t, 2)));
  });

  it('round-trips the fixed layout; the new ring id depends on every input', () => {
    const s = statement();
    const bytes = encodeOpenStatement(s);
    expect(bytes.length).toBe(openStatementBytes);
    expect(decodeOpenStatement(bytes)).toEqual(s);
    const id = recoveredRingId(s.prevRing, 4, s.next);
    expect(id).toHaveLength(32);
    expect(recoveredRingId(s.prevRing, 5, s.next)).not.toEqual(id);
    expect(recoveredRingId(s.prevRing, 4, randomBytes(32))).not.toEqual(id);
  });

  it('the state digest changes with any entry, not with their order', () => {
    const e = [{ key: Buffer.from('a'), version: 3, value: Buffer.from('x') }, { key: Buffer.from('b'), version: 1, value: null }];
    expect(stateHash(e)).toEqual(stateHash([...e].reverse()));
    expect(stateHash(e)).not.toEqual(stateHash([{ ...e[0]!, version: 2 }, e[1]!]));
    const ring = randomBytes(32);
    const node = randomBytes(32);
    const d = { lastSeq: 10, entries: 2, stateHash: stateHash(e) };
    expect(digestHash(ring, 0, node, d)).not.toEqual(digestHash(ring, 0, node, { ...d, lastSeq: 9 }));
  });
});

describe("the member's check against its last-seen record (cli/recovery.ts compareSeen)", async () => {
  const { compareSeen } = await import('../cli/recovery.ts');
  const seen = { version: 1 as const, ring: 'aa'.repeat(32), gen: 2, nodes: { n1: { lastSeq: 50, entries: 9 }, n2: { lastSeq: 40, entries: 9 } } };
  const node = (over: Record<string, unknown>) => ({ addr: 'x', mode: 'recovery' as const, ring: seen.ring, gen: 2, node: 'n1', lastSeq: 50, entries: 9, ...over });
  it('signs what it saw; refuses older logs, older generations, unknown nodes and a partial ring', () => {
    expect(compareSeen(seen, [node({}), node({ node: 'n2', lastSeq: 41 })]).older).toBe(false);
    expect(compareSeen(seen, [node({ lastSeq: 49 }), node({ node: 'n2' })]).older).toBe(true);
    expect(compareSeen(seen, [node({ gen: 1 }), node({ node: 'n2', gen: 1 })]).older).toBe(true);
    expect(compareSeen(seen, [node({}), node({ node: 'n3', lastSeq: 0, entries: 0 })]).older).toBe(true);
    expect(compareSeen(seen, [node({})]).older).toBe(true);
    expect(compareSeen(null, [node({ lastSeq: 0 })]).older).toBe(false); // no record: the member must compare by other means
  });
});
