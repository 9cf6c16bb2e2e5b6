// The COSE_Sign1 signature (RFC 9052, section 4.4): ES384 over the Sig_structure
// ["Signature1", protected, external_aad = h'', payload], where protected and payload are the byte
// strings exactly as they arrived. Only this small array is encoded by us; the payload is never re-encoded.
import { verify as verifySignature, type KeyObject } from 'node:crypto';
import { Encoder } from 'cbor-x';
import { AttestationError } from './errors.ts';

// tagUint8Array: false makes cbor-x write plain byte strings (major type 2) for Uint8Arrays.
const encoder = new Encoder({ useRecords: false, tagUint8Array: false });
const emptyAad = new Uint8Array(0);

export function sigStructure(protectedHeader: Uint8Array, payload: Uint8Array): Uint8Array {
  return encoder.encode(['Signature1', protectedHeader, emptyAad, payload]);
}

/** Throws BAD_SIGNATURE unless `signature` (raw r || s) verifies; high-S values are accepted, as Nitro needs. */
export async function verifyCoseSignature(
  key: KeyObject,
  protectedHeader: Uint8Array,
  payload: Uint8Array,
  signature: Uint8Array,
): Promise<void> {
  const data = sigStructure(protectedHeader, payload);
  // The callback form runs in libuv's pool, keeping the event loop free during the EC arithmetic.
  const ok = await new Promise<boolean>((resolve) => {
    verifySignature('sha384', data, { key, dsaEncoding: 'ieee-p1363' }, signature, (err, valid) =>
      resolve(err === null && valid),
    );
  });
  if (!ok) throw new AttestationError('BAD_SIGNATURE', 'the COSE signature does not verify with the leaf key');
}
