/**
 * A stand-in attestation for protocol tests that run the real handshake without an NSM: the "document" is CBOR of
 * the nonce and the key, and the verifier checks the nonce (UNATTESTED/NONCE_MISMATCH when it differs).
 */
import type { VerifyDoc } from '../../protocol/handshake.ts';
import { decodeCbor, encodeCbor } from '../../protocol/cbor.ts';
import { EkvError } from '../../protocol/errors.ts';

export const fakeAttest = (nonce: Uint8Array, publicKey: Uint8Array): Promise<Buffer> => Promise.resolve(encodeCbor({ fake: 1, nonce, key: publicKey }));

export const fakeVerify: VerifyDoc = async (doc, nonce) => {
  const d = decodeCbor(doc) as { nonce?: Uint8Array; key?: Uint8Array | null };
  if (!(d.nonce instanceof Uint8Array) || !Buffer.from(d.nonce).equals(Buffer.from(nonce))) {
    throw new EkvError('UNATTESTED', 'nonce differs', { reason: 'NONCE_MISMATCH' });
  }
  return { publicKey: d.key ?? null, pcrs: new Map(), leafNotAfter: Date.now() + 3_600_000, timestamp: Date.now(), moduleId: 'fake' };
};
