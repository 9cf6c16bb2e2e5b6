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

const init = (attest = kms.attestGood) => ({ blobs: seal.client(), kms: kms.enclave(), keyId: kms.kms.defaultKeyId, attest });

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
    await loadOrCreateDataKey({ blobs: seal.client(), kms: kms.enclave(), keyId: kms.kms.defaultKeyId, attest: kms.attestGood });
    const { Decoder } = await import('cbor-x');
    const dk = new Decoder({ mapsAsObjects: true }).decode(await seal.client().get(dataKeyBlobName) as Uint8Array) as { ciphertextBlob: Uint8Array };
    await expect(openRingSecret(init(), dk.ciphertextBlob)).rejects.toMatchObject({ code: 'KMS_INVALID_CIPHERTEXT' });
  });

  it('a malformed blob is a typed RingError', async () => {
    await seal.client().put(ringSecretBlobName, Buffer.from('not cbor at all \xff'));
    await expect(readRingSecretBlob(seal.client())).rejects.toBeInstanceOf(RingError);
    await seal.client().put(ringSecretBlobName, encodeRingSecretRecord(Buffer.alloc(0)));
    await expect(readRingSecretBlob(seal.client())).rejects.toMatchObject({ code: 'RING_SECRET_CORRUPT' });
  });
});
