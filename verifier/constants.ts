// Limits of the verifier, checked before anything from the wire is allocated or trusted.
// Bounds follow what genuine Nitro documents carry (see test/fixtures/nitro/README.md), not
// only AWS's prose: optional fields of 1024 bytes and more than 16 PCRs occur in real documents.
import assert from 'node:assert/strict';

/** Optional fields (public_key, user_data, nonce) accepted from the wire. */
export const optionalFieldBytesMax = 1024;
/** What enclave-kv itself puts into an optional field, so that every verifier accepts it. */
export const ownOptionalFieldBytesMax = 512;
/** The leaf certificate and every cabundle entry. */
export const certificateBytesMin = 1;
export const certificateBytesMax = 1024;
/** cabundle is [root, regional, zonal, instance] today; leave room, but stay bounded. */
export const cabundleLengthMin = 1;
export const cabundleLengthMax = 8;
/** The NSM has 32 PCRs; it reports at least one. */
export const pcrCountMin = 1;
export const pcrCountMax = 32;
export const pcrIndexMax = 31;
/** SHA-256, SHA-384 and SHA-512 sized registers. */
export const pcrValueLengths: readonly number[] = [32, 48, 64];
/** module_id is an instance id plus an enclave id, about 40 characters. */
export const moduleIdLengthMax = 256;
/** ES384: raw r || s, 48 bytes each. */
export const signatureBytes = 96;
/** COSE algorithm id of ECDSA P-384 with SHA-384. */
export const coseAlgEs384 = -35;
/** The protected header is `{1: -35}` (4 bytes) in genuine documents. */
export const protectedHeaderBytesMax = 64;
/**
 * A whole document: every bounded field at its maximum plus generous room for the CBOR framing and
 * for unknown keys, which the signature covers and we ignore.
 */
export const documentBytesMax = 32 * 1024;
/** Clock skew allowed between us and AWS's certificate authority when none is given. */
export const clockSkewMsDefault = 60_000;
/** Verified chains remembered by one ChainCache. */
export const chainCacheEntriesMax = 256;

const fieldsAtMax =
  certificateBytesMax * (1 + cabundleLengthMax) +
  3 * optionalFieldBytesMax +
  pcrCountMax * (Math.max(...pcrValueLengths) + 4) +
  moduleIdLengthMax +
  signatureBytes +
  protectedHeaderBytesMax;
assert.ok(documentBytesMax > fieldsAtMax, 'documentBytesMax must hold every field at its maximum');
assert.ok(ownOptionalFieldBytesMax <= optionalFieldBytesMax);
assert.ok(pcrCountMax === pcrIndexMax + 1);
