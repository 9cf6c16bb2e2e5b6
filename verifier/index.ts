// enclave-kv's Nitro attestation verifier: one call, a fixed pipeline, a closed set of error codes.
//   1. structure  (MALFORMED)                          decode.ts
//   2. chain      (UNTRUSTED_ROOT, BAD_CHAIN, EXPIRED)   chain.ts, cache.ts
//   3. signature  (BAD_SIGNATURE)                       cose.ts
//   4. policy     (DEBUG_MODE, PCR_MISMATCH, NONCE_MISMATCH, TOO_OLD)   policy.ts
// The first failing check is the one reported. See README.md.
import assert from 'node:assert/strict';
import { ChainCache } from './cache.ts';
import { verifyChain } from './chain.ts';
import { clockSkewMsDefault } from './constants.ts';
import { verifyCoseSignature } from './cose.ts';
import { decodeAttestationDocument, type AttestationFields, type DecodedAttestationDocument } from './decode.ts';
import { checkPolicy, expectedPcrs, type ExpectedPcr, type PolicyChecks } from './policy.ts';
import { AWS_NITRO_ROOT_PEM } from './root.ts';

export { AttestationError, attestationErrorCodes, type AttestationErrorCode } from './errors.ts';
export { ChainCache, type VerifiedChain } from './cache.ts';
export { decodeAttestationDocument, type AttestationFields, type DecodedAttestationDocument } from './decode.ts';
export { sigStructure } from './cose.ts';
export { AWS_NITRO_ROOT_PEM, AWS_NITRO_ROOT_SHA256 } from './root.ts';
export * as verifierLimits from './constants.ts';

export interface VerifyPolicy {
  /** Trusted roots, PEM (one or more certificates) or DER; default: the AWS Nitro root only. */
  roots?: Array<string | Uint8Array>;
  /** The time of the check, ms since the epoch; default Date.now(). */
  now?: number | Date;
  /** Allowed clock difference for certificate validity and document age; default 60 s. */
  clockSkewMs?: number;
  /** Expected PCRs by index, hex or bytes; an array lists the values allowed (any of). */
  pcrs?: Record<number, ExpectedPcr | ExpectedPcr[]>;
  /** The nonce the document must carry. */
  nonce?: Uint8Array;
  /** The document's timestamp may be at most this old (plus skew). */
  maxAgeMs?: number;
  /** Accept debug-mode documents (PCR0 all zeros); default false. */
  allowDebug?: boolean;
  /** Verified-chain cache; default a module-level one; false disables caching. */
  cache?: ChainCache | false;
}

/** A verified document: its fields (copies, not views of the input) and its certificate's expiry. */
export interface AttestationDocument extends AttestationFields {
  /** When the document's signing certificate expires (ms). */
  leafNotAfter: number;
}

const defaultRoots: readonly Uint8Array[] = pemCertificates(AWS_NITRO_ROOT_PEM);
let defaultCache = new ChainCache();

/**
 * Replace the process-wide default chain cache (used when a policy names none), e.g. with one that also
 * remembers verified chains across processes (the CLI's, cli/chain-cache-file.ts). A cache only ever
 * stands in for step 2's time-independent work on the exact chain bytes: the root and time checks, the
 * COSE signature and the policy still run on every document.
 */
export function setDefaultChainCache(cache: ChainCache): void {
  defaultCache = cache;
}

export async function verifyAttestation(doc: Uint8Array, policy: VerifyPolicy = {}): Promise<AttestationDocument> {
  const checks = resolvePolicy(policy);
  const decoded = decodeAttestationDocument(doc);
  const chain = await verifyChain({
    cabundle: decoded.cabundle,
    certificate: decoded.certificate,
    roots: policy.roots === undefined ? defaultRoots : policy.roots.flatMap(rootDer),
    cache: policy.cache === false ? null : (policy.cache ?? defaultCache),
    now: checks.now,
    clockSkewMs: checks.clockSkewMs,
  });
  await verifyCoseSignature(chain.leafKey, decoded.protectedHeader, decoded.payloadBytes, decoded.signature);
  checkPolicy(decoded, checks);
  return publicView(decoded, chain.leafNotAfter);
}

/** The policy is the caller's code, not hostile input: a nonsensical one is a programmer error. */
function resolvePolicy(policy: VerifyPolicy): PolicyChecks {
  const now = policy.now === undefined ? Date.now() : policy.now instanceof Date ? policy.now.getTime() : policy.now;
  assert.ok(Number.isFinite(now), 'policy.now must be a valid time');
  const clockSkewMs = policy.clockSkewMs ?? clockSkewMsDefault;
  assert.ok(Number.isFinite(clockSkewMs) && clockSkewMs >= 0, 'policy.clockSkewMs must be >= 0');
  const maxAgeMs = policy.maxAgeMs ?? null;
  assert.ok(maxAgeMs === null || (Number.isFinite(maxAgeMs) && maxAgeMs >= 0), 'policy.maxAgeMs must be >= 0');
  assert.ok(policy.nonce === undefined || policy.nonce instanceof Uint8Array, 'policy.nonce must be bytes');
  return {
    allowDebug: policy.allowDebug === true,
    pcrs: expectedPcrs(policy.pcrs),
    nonce: policy.nonce ?? null,
    maxAgeMs,
    now,
    clockSkewMs,
  };
}

function rootDer(root: string | Uint8Array): Uint8Array[] {
  return typeof root === 'string' ? pemCertificates(root) : [root];
}

/** The DER of every CERTIFICATE block in a PEM text. */
export function pemCertificates(pem: string): Uint8Array[] {
  const blocks = [...pem.matchAll(/-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/g)];
  assert.ok(blocks.length > 0, 'a PEM root holds no CERTIFICATE block');
  return blocks.map((m) => new Uint8Array(Buffer.from((m[1] as string).replace(/\s+/g, ''), 'base64')));
}

/** Copies, so the result does not alias (or pin) the caller's input buffer. */
function publicView(d: DecodedAttestationDocument, leafNotAfter: number): AttestationDocument {
  const copy = (b: Uint8Array): Uint8Array => Uint8Array.prototype.slice.call(b);
  return {
    moduleId: d.moduleId,
    digest: d.digest,
    timestamp: d.timestamp,
    pcrs: new Map([...d.pcrs].map(([i, v]) => [i, copy(v)])),
    certificate: copy(d.certificate),
    cabundle: d.cabundle.map(copy),
    publicKey: d.publicKey && copy(d.publicKey),
    userData: d.userData && copy(d.userData),
    nonce: d.nonce && copy(d.nonce),
    leafNotAfter,
  };
}
