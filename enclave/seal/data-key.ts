/**
 * The node's data key at boot: the first boot asks KMS for a new one (with a
 * fresh random store id bound in as the encryption context) and stores only the
 * CiphertextBlob with the host; later boots read that blob back and ask KMS to
 * Decrypt it to this enclave's attestation document. The host can change the
 * stored record but then KMS refuses to decrypt it (the context or the blob no
 * longer match), so the worst it can do is deny service. A record the host made
 * itself, under a KMS key of its own, is refused too: the client names the
 * image's pinned key ARN in Decrypt and checks the KeyId of the answer
 * (kms-client.ts), so only a blob of the pinned key ever becomes our data key.
 */
import { randomBytes } from 'node:crypto';
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../../verifier/strict-cbor.ts';
import type { BlobClient } from './blob-client.ts';
import { SealError } from './errors.ts';
import type { AttestFn, EnclaveKms } from './kms-client.ts';

export const dataKeyBlobName = 'datakey';
const storeIdBytes = 16;
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

export interface DataKeyInit {
  blobs: BlobClient;
  /** Bound to the image's pinned key ARN. */
  kms: EnclaveKms;
  attest: AttestFn;
}

export interface NodeDataKey {
  /** 32 bytes, for SealedStore.open({ dataKey }). Wipe on shutdown. */
  dataKey: Buffer;
  /** The store id, for SealedStore.open({ nodeId }). */
  nodeId: Buffer;
  /** True on the first boot (no sealed state exists yet). */
  created: boolean;
}

export async function loadOrCreateDataKey(init: DataKeyInit): Promise<NodeDataKey> {
  const stored = await init.blobs.get(dataKeyBlobName);
  if (stored !== null) {
    const { nodeId, ciphertextBlob } = parseRecord(stored);
    const dataKey = await init.kms.decryptDataKey(ciphertextBlob, init.attest, { encryptionContext: context(nodeId) });
    return { dataKey, nodeId, created: false };
  }
  const nodeId = randomBytes(storeIdBytes);
  const gen = await init.kms.generateDataKey(init.attest, { encryptionContext: context(nodeId) });
  await init.blobs.put(dataKeyBlobName, cbor.encode({ v: 1, nodeId, keyId: gen.keyId, ciphertextBlob: Buffer.from(gen.ciphertextBlob) }));
  return { dataKey: gen.plaintextKey, nodeId, created: true };
}

function context(nodeId: Buffer): Record<string, string> {
  return { 'ekv:store': nodeId.toString('hex') };
}

/** The stored record, checked field by field (exported for the fuzzer). */
export function parseRecord(bytes: Uint8Array): { nodeId: Buffer; ciphertextBlob: Uint8Array } {
  let rec: unknown;
  try {
    rec = decodeUntrustedCbor(bytes, { maps: 'object', depthMax: 2, itemsMax: 64 });
  } catch (cause) {
    throw new SealError('SEAL_CORRUPT', 'the stored data key record is not CBOR', { cause });
  }
  const r = rec as Record<string, unknown> | null;
  const nodeId = r?.['nodeId'];
  const blob = r?.['ciphertextBlob'];
  if (r?.['v'] !== 1 || !(nodeId instanceof Uint8Array) || nodeId.length !== storeIdBytes || !(blob instanceof Uint8Array) || blob.length > 6144) {
    throw new SealError('SEAL_CORRUPT', 'the stored data key record is malformed');
  }
  return { nodeId: Buffer.from(nodeId), ciphertextBlob: blob };
}
