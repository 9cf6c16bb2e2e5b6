// The ring secret through the emulated KMS (real SDK, Recipient): the founding boot creates it and stores only
// the ciphertext; another node of the same image opens the same ring id from that ciphertext; another image is
// denied; the ciphertext is not a data key (another encryption context) and a data key's blob is not a ring
// secret; a malformed blob is a typed RingError.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateDataKey, dataKeyBlobName } from '../enclave/seal/data-key.ts';
import { createRingSecret, encodeRingSecretRecord, openRingSecret, readRingSecretBlob, RingError, ringSecretBlobName } from '../enclave/seal/ring-secret.ts';
import { startKmsEnv, type KmsEnv } from './helpers/kms-env.ts';
import { startSealEnv, type SealEnv } from './helpers/seal-env.ts';

let kms: KmsEnv;
let seal: SealEnv;
beforeAll(async () => {
  kms = await startKmsEnv();
  seal = await startSealEnv();
});
afterAll(async () => {
  await kms.close();
  await seal.cleanup();
});

const init = (attest = kms.attestGood, o: { keyArn?: string; unsafeSkipKeyIdCheck?: boolean } = {}) => ({ blobs: seal.client(), kms: kms.enclave(o), attest });

describe('ring secret', () => {
  it('is created once, stored only as ciphertext, and opens to the same ring id for another node of the image', async () => {
    const founded = await createRingSecret(init());
    const blob = await readRingSecretBlob(seal.client());
    expect(blob).not.toBeNull();
    const opened = await openRingSecret(init(), blob as Uint8Array);
    expect(opened.id).toEqual(founded.id);
    expect(opened.macKey).toEqual(founded.macKey);
    expect(founded.id.equals(founded.macKey)).toBe(false);
    const stored = await seal.client().get(ringSecretBlobName);
    expect(Buffer.from(stored as Uint8Array).includes(founded.macKey)).toBe(false);
  });

  it('another image is denied it (KMS_DENIED)', async () => {
    const blob = (await readRingSecretBlob(seal.client())) as Uint8Array;
    await expect(openRingSecret(init(kms.attestOther), blob)).rejects.toMatchObject({ code: 'KMS_DENIED' });
  });

  it('is not interchangeable with a data key (encryption contexts differ)', async () => {
    await loadOrCreateDataKey({ blobs: seal.client(), kms: kms.enclave(), attest: kms.attestGood });
    const { Decoder } = await import('cbor-x');
    const dk = new Decoder({ mapsAsObjects: true }).decode(await seal.client().get(dataKeyBlobName) as Uint8Array) as { ciphertextBlob: Uint8Array };
    await expect(openRingSecret(init(), dk.ciphertextBlob)).rejects.toMatchObject({ code: 'KMS_INVALID_CIPHERTEXT' });
  });

  it('is pinned to the image key: a ring secret the host made under another key is refused (KMS_WRONG_KEY)', async () => {
    const other = kms.kms.createKey({ policy: { allowWithoutRecipient: ['GenerateDataKey', 'Decrypt'], recipientConditions: {} } });
    const planted = await createRingSecret(init(kms.attestGood, { keyArn: other.arn }));
    const blob = (await readRingSecretBlob(seal.client())) as Uint8Array;
    await expect(openRingSecret(init(), blob)).rejects.toMatchObject({ code: 'KMS_WRONG_KEY' });
    // Control: without the key pin and KeyId check (the test seam), the host's ring secret would open.
    expect((await openRingSecret(init(kms.attestGood, { unsafeSkipKeyIdCheck: true }), blob)).id).toEqual(planted.id);
  });

  it('a malformed blob is a typed RingError', async () => {
    await seal.client().put(ringSecretBlobName, Buffer.from('not cbor at all \xff'));
    await expect(readRingSecretBlob(seal.client())).rejects.toBeInstanceOf(RingError);
    await seal.client().put(ringSecretBlobName, encodeRingSecretRecord(Buffer.alloc(0)));
    await expect(readRingSecretBlob(seal.client())).rejects.toMatchObject({ code: 'RING_SECRET_CORRUPT' });
  });
});
