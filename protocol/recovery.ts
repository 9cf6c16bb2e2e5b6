/**
 * Recovery of a stopped ring (docs/recovery.md): the open statement k of the deployment's n recovery members
 * sign, its verification, and the identity of the reopened ring. Pure: no I/O, no clock, no randomness.
 *
 * Statement (fixed layout, nothing to parse ambiguously):
 *   "ekv/1 recovery open\0" || prevRing (32) || u64be generation || node (32) || digest (32) || nonce (32) || next (32)
 * signed by a member's principal key (protocol/principal.ts). The prefix separates it from every other thing a
 * principal signs. `nonce` is drawn by the node in recovery mode at this boot, so an open captured earlier
 * does not open the same old state again; `digest` binds the exact state the member checked.
 */
import { createHash } from 'node:crypto';
import { principalBytesMax, principalFromBytes, principalFromText, principalSignatureBytes, verifyPrincipalSignature, type Principal } from './principal.ts';

export const recoveryDomain = Buffer.from('ekv/1 recovery open\0');
export const recoveryFieldBytes = 32;
export const openStatementBytes = recoveryDomain.length + 32 + 8 + 32 + 32 + 32 + 32;
/** Recovery members per image. */
export const recoveryMembersMax = 16;
/** Previous ring ids a node names in its handshake (newest first). */
export const previousRingsMax = 8;
const recoveredLabel = Buffer.from('ekv/1 ring recovered');

export type RecoveryErrorCode =
  | 'MALFORMED' // not a statement, signature or member of the expected shape
  | 'BAD_POLICY' // the policy itself is unusable (no members, k out of range, a duplicate member)
  | 'NOT_MEMBER' // the signer is not a recovery member
  | 'BAD_SIGNATURE' // the signature does not verify over the statement
  | 'WRONG_RING' // the statement names another recovered ring
  | 'WRONG_GENERATION'
  | 'WRONG_NODE'
  | 'WRONG_DIGEST' // the member signed another state than this node recovered
  | 'REPLAYED' // another nonce: a statement signed for an earlier boot
  | 'WRONG_NEXT' // another new identity than the one already begun on this node
  | 'DUPLICATE_SIGNER'
  | 'TOO_FEW';

export class RecoveryError extends Error {
  readonly code: RecoveryErrorCode;
  constructor(code: RecoveryErrorCode, message: string) {
    super(message);
    this.name = 'RecoveryError';
    this.code = code;
  }
}

export interface OpenStatement {
  prevRing: Buffer;
  generation: number;
  node: Buffer;
  digest: Buffer;
  nonce: Buffer;
  next: Buffer;
}

export interface RecoveryPolicy {
  members: Principal[];
  threshold: number;
}

/** A member's signature as submitted: the statement it signed, the member (binary principal), the signature. */
export interface OpenSignature {
  statement: Uint8Array;
  member: Uint8Array;
  sig: Uint8Array;
}

function field(name: string, b: Buffer): Buffer {
  if (!Buffer.isBuffer(b) || b.length !== recoveryFieldBytes) throw new RangeError(`${name} must be ${recoveryFieldBytes} bytes`);
  return b;
}

export function encodeOpenStatement(s: OpenStatement): Buffer {
  if (!Number.isSafeInteger(s.generation) || s.generation < 0) throw new RangeError('generation must be a non-negative integer');
  const g = Buffer.alloc(8);
  g.writeBigUInt64BE(BigInt(s.generation));
  return Buffer.concat([recoveryDomain, field('prevRing', s.prevRing), g, field('node', s.node), field('digest', s.digest), field('nonce', s.nonce), field('next', s.next)]);
}

export function decodeOpenStatement(bytes: Uint8Array): OpenStatement {
  if (!(bytes instanceof Uint8Array) || bytes.length !== openStatementBytes) throw new RecoveryError('MALFORMED', 'not an open statement (length)');
  const b = Buffer.from(bytes);
  if (!b.subarray(0, recoveryDomain.length).equals(recoveryDomain)) throw new RecoveryError('MALFORMED', 'not an open statement (domain)');
  let at = recoveryDomain.length;
  const take = (n: number) => {
    const out = Buffer.from(b.subarray(at, at + n));
    at += n;
    return out;
  };
  const prevRing = take(32);
  const g = take(8).readBigUInt64BE();
  if (g > BigInt(Number.MAX_SAFE_INTEGER)) throw new RecoveryError('MALFORMED', 'generation out of range');
  return { prevRing, generation: Number(g), node: take(32), digest: take(32), nonce: take(32), next: take(32) };
}

/** The reopened ring's identity: id_{g+1} = SHA-256(label || id_g || u64be(g+1) || next). */
export function recoveredRingId(prevRing: Buffer, generation: number, next: Buffer): Buffer {
  const g = Buffer.alloc(8);
  g.writeBigUInt64BE(BigInt(generation + 1));
  return createHash('sha256').update(recoveredLabel).update(field('prevRing', prevRing)).update(g).update(field('next', next)).digest();
}

/** A policy from the image's settings (principal texts and k); BAD_POLICY when it cannot be satisfied. */
export function recoveryPolicy(memberTexts: readonly string[], threshold: number): RecoveryPolicy {
  if (memberTexts.length === 0 || memberTexts.length > recoveryMembersMax) throw new RecoveryError('BAD_POLICY', `1 to ${recoveryMembersMax} recovery members`);
  if (!Number.isSafeInteger(threshold) || threshold < 1 || threshold > memberTexts.length) throw new RecoveryError('BAD_POLICY', `threshold ${threshold} of ${memberTexts.length} members`);
  const members = memberTexts.map((t) => {
    try {
      return principalFromText(t);
    } catch {
      throw new RecoveryError('BAD_POLICY', `not a principal: ${String(t).slice(0, 80)}`);
    }
  });
  if (new Set(members.map((m) => m.id)).size !== members.length) throw new RecoveryError('BAD_POLICY', 'a recovery member is named twice');
  return { members, threshold };
}

/** SHA-256 of the policy (k, then the members' binary forms sorted): recorded sealed and shown by status. */
export function policyDigest(p: RecoveryPolicy): Buffer {
  const h = createHash('sha256').update('ekv/1 recovery policy').update(Buffer.of(p.threshold));
  for (const m of [...p.members].sort((a, b) => a.bytes.compare(b.bytes))) h.update(Buffer.of(m.bytes.length)).update(m.bytes);
  return h.digest();
}

/**
 * One member's signature, checked against the statement this node expects. Returns the member. The checks
 * run cheapest and most telling first: shape, membership, the statement's fields, then the signature.
 */
export function verifyOpenSignature(policy: RecoveryPolicy, expected: OpenStatement, s: OpenSignature): Principal {
  if (!(s.member instanceof Uint8Array) || s.member.length > principalBytesMax) throw new RecoveryError('MALFORMED', 'member: not a principal');
  if (!(s.sig instanceof Uint8Array) || s.sig.length !== principalSignatureBytes) throw new RecoveryError('MALFORMED', 'signature: wrong length');
  let member: Principal;
  try {
    member = principalFromBytes(s.member);
  } catch {
    throw new RecoveryError('MALFORMED', 'member: not a principal');
  }
  if (!policy.members.some((m) => m.equals(member))) throw new RecoveryError('NOT_MEMBER', `${member.text} is not a recovery member of this ring`);
  const got = decodeOpenStatement(s.statement);
  if (!got.prevRing.equals(expected.prevRing)) throw new RecoveryError('WRONG_RING', 'the statement opens another ring');
  if (got.generation !== expected.generation) throw new RecoveryError('WRONG_GENERATION', `the statement opens generation ${got.generation}, this node recovered ${expected.generation}`);
  if (!got.node.equals(expected.node)) throw new RecoveryError('WRONG_NODE', 'the statement opens another node');
  if (!got.digest.equals(expected.digest)) throw new RecoveryError('WRONG_DIGEST', 'the statement opens another state than this node recovered');
  if (!got.nonce.equals(expected.nonce)) throw new RecoveryError('REPLAYED', 'the statement was signed for another boot (its nonce is not this one)');
  if (!got.next.equals(expected.next)) throw new RecoveryError('WRONG_NEXT', 'the statement names another new ring identity than the one begun');
  if (!verifyPrincipalSignature(member, s.statement, s.sig)) throw new RecoveryError('BAD_SIGNATURE', `the signature of ${member.text} does not verify`);
  return member;
}

/**
 * The whole set: every signature valid for `expected`, no member twice, at least k. Returns the signers.
 * (The enclave adds signatures one at a time with verifyOpenSignature and the same duplicate rule.)
 */
export function verifyOpen(policy: RecoveryPolicy, expected: OpenStatement, sigs: readonly OpenSignature[]): Principal[] {
  if (sigs.length > recoveryMembersMax) throw new RecoveryError('MALFORMED', `more than ${recoveryMembersMax} signatures`);
  const signers: Principal[] = [];
  for (const s of sigs) {
    const m = verifyOpenSignature(policy, expected, s);
    if (signers.some((x) => x.equals(m))) throw new RecoveryError('DUPLICATE_SIGNER', `${m.text} signed twice`);
    signers.push(m);
  }
  if (signers.length < policy.threshold) throw new RecoveryError('TOO_FEW', `${signers.length} of the ${policy.threshold} recovery members needed have signed`);
  return signers;
}

/** A member signs (client side: `ekv recovery open`). */
export function signOpen(signer: { principal: Principal; sign(m: Uint8Array): Buffer }, s: OpenStatement): OpenSignature {
  const statement = encodeOpenStatement(s);
  return { statement, member: signer.principal.bytes, sig: signer.sign(statement) };
}

/**
 * A node's state digest (shown in recovery mode, bound by the statement): its sealed log's last sequence
 * number, its entry count, and a hash over every entry sorted by key hash. `digestHash` is what is signed.
 */
export interface StateDigest {
  lastSeq: number;
  entries: number;
  stateHash: Buffer;
}

export function digestHash(ring: Buffer, generation: number, node: Buffer, d: StateDigest): Buffer {
  const n = Buffer.alloc(24);
  n.writeBigUInt64BE(BigInt(generation), 0);
  n.writeBigUInt64BE(BigInt(d.lastSeq), 8);
  n.writeBigUInt64BE(BigInt(d.entries), 16);
  return createHash('sha256').update('ekv/1 recovery digest').update(ring).update(node).update(n).update(d.stateHash).digest();
}

/** stateHash over (key, version, value|tombstone) entries, order-independent (sorted by key hash). */
export function stateHash(entries: Iterable<{ key: Uint8Array; version: number; value: Uint8Array | null }>): Buffer {
  const rows: Buffer[] = [];
  for (const e of entries) {
    const row = Buffer.alloc(32 + 8 + 32);
    createHash('sha256').update(e.key).digest().copy(row, 0);
    row.writeBigUInt64BE(BigInt(e.version), 32);
    (e.value === null ? Buffer.alloc(32) : createHash('sha256').update(e.value).digest()).copy(row, 40);
    rows.push(row);
  }
  rows.sort(Buffer.compare);
  const h = createHash('sha256').update('ekv/1 state');
  for (const r of rows) h.update(r);
  return h.digest();
}
