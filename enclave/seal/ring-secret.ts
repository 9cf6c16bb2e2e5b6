/**
 * The ring secret (docs/membership.md): 32 bytes per deployment that only KMS releases, only under the
 * image's pinned key and only to a Recipient whose attested PCRs the key policy names. The founding node
 * asks KMS for a new one (GenerateDataKey, through the same EnclaveKms client as the data key, so the key
 * pin applies) and stores the CiphertextBlob with its host as the blob `ring-secret`; every other node gets
 * that ciphertext from its host and asks KMS to Decrypt it to its own attestation document. The ciphertext
 * is not secret; the encryption context keeps it from being confused with a node's data key.
 */
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../../verifier/strict-cbor.ts';
import { ringCredential, type RingCredential } from '../../protocol/ring.ts';
import type { BlobClient } from './blob-client.ts';
import type { AttestFn, EnclaveKms } from './kms-client.ts';

export const ringSecretBlobName = 'ring-secret';
export const ringSecretContext: Readonly<Record<string, string>> = { 'ekv:purpose': 'ring-secret' };
const ciphertextBlobBytesMax = 6144;
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

export type RingErrorCode =
  | 'NO_RING_SECRET' // a node that may not found a ring has no ring-secret blob from its host
  | 'WRONG_RING' // the ring-secret blob opens to another ring than the one this node's sealed state belongs to
  | 'RING_SECRET_CORRUPT'; // the blob is not a ring-secret record

export class RingError extends Error {
  readonly code: RingErrorCode;
  constructor(code: RingErrorCode, message: string) {
    super(message);
    this.name = 'RingError';
    this.code = code;
  }
}

export interface RingSecretInit {
  blobs: BlobClient;
  /** Bound to the image's pinned key ARN: names it in every call and checks the KeyId of every answer. */
  kms: EnclaveKms;
  attest: AttestFn;
}

/** The ring-secret ciphertext the host holds, or null. */
export async function readRingSecretBlob(blobs: BlobClient): Promise<Uint8Array | null> {
  const stored = await blobs.get(ringSecretBlobName);
  return stored === null ? null : parseRingSecretRecord(stored);
}

/** Decrypt the ring's ciphertext with KMS (Recipient, the pinned key, the ring-secret context). */
export async function openRingSecret(init: RingSecretInit, ciphertextBlob: Uint8Array): Promise<RingCredential> {
  const secret = await init.kms.decryptDataKey(ciphertextBlob, init.attest, { encryptionContext: { ...ringSecretContext } });
  try {
    return ringCredential(secret);
  } finally {
    secret.fill(0);
  }
}

/** The founding boot: a new ring secret from KMS; its ciphertext is stored with the host. */
export async function createRingSecret(init: RingSecretInit): Promise<RingCredential> {
  const gen = await init.kms.generateDataKey(init.attest, { encryptionContext: { ...ringSecretContext } });
  try {
    await init.blobs.put(ringSecretBlobName, encodeRingSecretRecord(gen.ciphertextBlob));
    return ringCredential(gen.plaintextKey);
  } finally {
    gen.plaintextKey.fill(0);
  }
}

export function encodeRingSecretRecord(ciphertextBlob: Uint8Array): Buffer {
  return cbor.encode({ v: 1, ciphertextBlob: Buffer.from(ciphertextBlob) });
}

function parseRingSecretRecord(bytes: Uint8Array): Uint8Array {
  let rec: unknown;
  try {
    rec = decodeUntrustedCbor(bytes, { maps: 'object', depthMax: 2, itemsMax: 64 });
  } catch {
    throw new RingError('RING_SECRET_CORRUPT', 'the ring-secret blob is not CBOR');
  }
  const r = rec as Record<string, unknown> | null;
  const blob = r?.['ciphertextBlob'];
  if (r?.['v'] !== 1 || !(blob instanceof Uint8Array) || blob.length === 0 || blob.length > ciphertextBlobBytesMax) {
    throw new RingError('RING_SECRET_CORRUPT', 'the ring-secret blob is malformed');
  }
  return blob;
}
