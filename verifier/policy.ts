// The caller's policy, checked last, on a document whose chain and signature are already proven:
// debug mode, expected PCRs, the expected nonce, and the document's age.
import assert from 'node:assert/strict';
import { timingSafeEqual } from 'node:crypto';
import { pcrIndexMax } from './constants.ts';
import type { DecodedAttestationDocument } from './decode.ts';
import { AttestationError } from './errors.ts';

export type ExpectedPcr = string | Uint8Array;

export interface PolicyChecks {
  allowDebug: boolean;
  pcrs: Map<number, Uint8Array[]>;
  nonce: Uint8Array | null;
  maxAgeMs: number | null;
  now: number;
  clockSkewMs: number;
}

export function checkPolicy(doc: DecodedAttestationDocument, policy: PolicyChecks): void {
  if (!policy.allowDebug) checkNotDebug(doc.pcrs);
  for (const [index, allowed] of policy.pcrs) checkPcr(doc.pcrs, index, allowed);
  if (policy.nonce !== null) checkNonce(doc.nonce, policy.nonce);
  if (policy.maxAgeMs !== null) checkAge(doc.timestamp, policy.maxAgeMs, policy.now, policy.clockSkewMs);
}

/** Debug-mode enclaves report PCR0 as all zeros; without PCR0 we cannot tell, so refuse too. */
function checkNotDebug(pcrs: Map<number, Uint8Array>): void {
  const pcr0 = pcrs.get(0);
  if (pcr0 === undefined) throw new AttestationError('DEBUG_MODE', 'PCR0 is absent, so debug mode cannot be ruled out');
  if (pcr0.every((b) => b === 0)) throw new AttestationError('DEBUG_MODE', 'PCR0 is all zeros: a debug-mode enclave');
}

function checkPcr(pcrs: Map<number, Uint8Array>, index: number, allowed: Uint8Array[]): void {
  const actual = pcrs.get(index);
  if (actual === undefined) throw new AttestationError('PCR_MISMATCH', `PCR${index} is absent`);
  if (!allowed.some((want) => bytesEqual(actual, want))) {
    throw new AttestationError('PCR_MISMATCH', `PCR${index} is ${Buffer.from(actual).toString('hex')}, not an expected value`);
  }
}

function checkNonce(actual: Uint8Array | null, expected: Uint8Array): void {
  if (actual === null) throw new AttestationError('NONCE_MISMATCH', 'the document has no nonce');
  if (!bytesEqual(actual, expected)) throw new AttestationError('NONCE_MISMATCH', 'the document nonce differs from the expected one');
}

/** Age must lie in [-skew, maxAge + skew]: a document from the future is as suspicious as a stale one. */
function checkAge(timestamp: number, maxAgeMs: number, now: number, skew: number): void {
  const age = now - timestamp;
  if (age > maxAgeMs + skew) throw new AttestationError('TOO_OLD', `the document is ${age} ms old, more than ${maxAgeMs} ms`);
  if (age < -skew) throw new AttestationError('TOO_OLD', `the document is dated ${-age} ms in the future`);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Normalizes VerifyPolicy.pcrs; a malformed expectation is the caller's bug, not hostile input. */
export function expectedPcrs(pcrs: Record<number, ExpectedPcr | ExpectedPcr[]> | undefined): Map<number, Uint8Array[]> {
  const out = new Map<number, Uint8Array[]>();
  for (const [key, value] of Object.entries(pcrs ?? {})) {
    const index = Number(key);
    assert.ok(Number.isInteger(index) && index >= 0 && index <= pcrIndexMax, `policy PCR index ${key} is not in 0..${pcrIndexMax}`);
    const list = Array.isArray(value) ? value : [value];
    assert.ok(list.length > 0, `policy PCR${index} allows no value`);
    out.set(index, list.map((v) => pcrBytes(v, index)));
  }
  return out;
}

function pcrBytes(value: ExpectedPcr, index: number): Uint8Array {
  if (value instanceof Uint8Array) return value;
  assert.ok(typeof value === 'string' && /^([0-9a-fA-F]{2})+$/.test(value), `policy PCR${index} is not hex`);
  return Buffer.from(value, 'hex');
}
