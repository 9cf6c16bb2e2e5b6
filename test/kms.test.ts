// The emulated KMS through the real @aws-sdk/client-kms (no mock of the SDK), with Recipient
// attestation documents from the emulated NSM verified by the project's verifier.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DecryptCommand, EncryptCommand, GenerateDataKeyCommand, GenerateRandomCommand, CreateKeyCommand,
  IncorrectKeyException, InvalidCiphertextException, NotFoundException,
} from '@aws-sdk/client-kms';
import { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRecipientCms, parseRecipientCms } from '../enclave/seal/cms.ts';
import { KmsError } from '../enclave/seal/errors.ts';
import { startKmsEnv, type KmsEnv } from './helpers/kms-env.ts';

let env: KmsEnv;
let openKeyId: string;
const allOps = ['CreateKey', 'GenerateDataKey', 'Decrypt', 'Encrypt', 'GenerateRandom'] as const;

beforeAll(async () => {
  env = await startKmsEnv();
  // A second key whose policy lets callers without a Recipient have plaintext (an operator's key).
  openKeyId = env.kms.createKey({ alias: 'alias/open', policy: { allowWithoutRecipient: [...allOps], recipientConditions: {} } }).arn;
});
afterAll(async () => env.close());

async function rejection(p: Promise<unknown>): Promise<Error & { $metadata?: { httpStatusCode?: number } }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

describe('emulated KMS without Recipient', () => {
  it('denies GenerateDataKey and Decrypt under the enclave policy, like the production key policy', async () => {
    const kms = env.sdk();
    const err = await rejection(kms.send(new GenerateDataKeyCommand({ KeyId: env.kms.defaultKeyId, KeySpec: 'AES_256' })));
    expect(err.name).toBe('AccessDeniedException');
    expect(err.$metadata?.httpStatusCode).toBe(400);
    const enc = await kms.send(new EncryptCommand({ KeyId: env.kms.defaultAlias, Plaintext: Buffer.from('x') }));
    const dec = await rejection(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob })));
    expect(dec.name).toBe('AccessDeniedException');
  });

  it('round-trips GenerateDataKey, Encrypt and Decrypt with a permissive key, binding the encryption context', async () => {
    const kms = env.sdk();
    const ctx = { store: 'node-1' };
    const gen = await kms.send(new GenerateDataKeyCommand({ KeyId: 'alias/open', KeySpec: 'AES_256', EncryptionContext: ctx }));
    expect(gen.Plaintext?.length).toBe(32);
    expect(gen.KeyId).toBe(openKeyId);
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: gen.CiphertextBlob, EncryptionContext: ctx }));
    expect(Buffer.from(dec.Plaintext!).equals(Buffer.from(gen.Plaintext!))).toBe(true);
    const enc = await kms.send(new EncryptCommand({ KeyId: openKeyId, Plaintext: Buffer.from('hello kms') }));
    const back = await kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: openKeyId }));
    expect(Buffer.from(back.Plaintext!).toString()).toBe('hello kms');

    const wrongCtx = await rejection(kms.send(new DecryptCommand({ CiphertextBlob: gen.CiphertextBlob, EncryptionContext: { store: 'node-2' } })));
    expect(wrongCtx).toBeInstanceOf(InvalidCiphertextException);
    const flipped = Buffer.from(gen.CiphertextBlob!);
    flipped[flipped.length - 3]! ^= 1;
    expect(await rejection(kms.send(new DecryptCommand({ CiphertextBlob: flipped, EncryptionContext: ctx })))).toBeInstanceOf(InvalidCiphertextException);
    const wrongKey = await rejection(kms.send(new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob, KeyId: env.kms.defaultKeyId })));
    expect(wrongKey).toBeInstanceOf(IncorrectKeyException);
  });

  it('answers unknown keys, bad parameters and CreateKey as KMS does', async () => {
    const kms = env.sdk();
    expect(await rejection(kms.send(new EncryptCommand({ KeyId: 'alias/nope', Plaintext: Buffer.from('x') })))).toBeInstanceOf(NotFoundException);
    const both = await rejection(kms.send(new GenerateDataKeyCommand({ KeyId: openKeyId, KeySpec: 'AES_256', NumberOfBytes: 32 })));
    expect(both.name).toBe('ValidationException');
    const rnd = await kms.send(new GenerateRandomCommand({ NumberOfBytes: 48 }));
    expect(rnd.Plaintext?.length).toBe(48);
    const created = await kms.send(new CreateKeyCommand({ Description: 'test' }));
    expect(created.KeyMetadata?.Arn).toMatch(/^arn:aws:kms:us-east-1:\d{12}:key\/[0-9a-f-]{36}$/);
    expect(created.KeyMetadata?.CreationDate).toBeInstanceOf(Date);
  });

  it('bounds the request body and speaks the KMS error shape on the wire', async () => {
    const post = (target: string, body: string) =>
      fetch(env.kms.url, { method: 'POST', headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': target }, body });
    const big = await post('TrentService.Encrypt', JSON.stringify({ KeyId: openKeyId, Plaintext: 'A'.repeat(200_000) }));
    expect(big.status).toBe(400);
    expect(((await big.json()) as { __type: string }).__type).toBe('ValidationException');
    const unknown = await post('TrentService.ScheduleKeyDeletion', '{}');
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { __type: string }).__type).toBe('UnknownOperationException');
    const junk = await post('TrentService.Decrypt', '{"CiphertextBlob":');
    expect(((await junk.json()) as { __type: string }).__type).toBe('SerializationException');
    const notB64 = await post('TrentService.Decrypt', JSON.stringify({ CiphertextBlob: '***' }));
    expect(((await notB64.json()) as { __type: string }).__type).toBe('ValidationException');
  });
});

describe('emulated KMS with Recipient', () => {
  it('returns the data key only as CiphertextForRecipient, a CMS EnvelopedData the enclave opens', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const doc = await env.attestGood(publicKey.export({ format: 'der', type: 'spki' }));
    const recipient = { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256' as const, AttestationDocument: doc };
    const kms = env.sdk();
    const gen = await kms.send(new GenerateDataKeyCommand({ KeyId: env.kms.defaultAlias, KeySpec: 'AES_256', Recipient: recipient }));
    expect(gen.Plaintext).toBeUndefined();
    const cms = parseRecipientCms(gen.CiphertextForRecipient!);
    expect(cms.encryptedKey.length).toBe(256);
    expect(cms.iv.length).toBe(16);
    const key = openRecipientCms(gen.CiphertextForRecipient!, privateKey);
    expect(key.length).toBe(32);
    const dec = await kms.send(new DecryptCommand({ CiphertextBlob: gen.CiphertextBlob, Recipient: recipient }));
    expect(dec.Plaintext).toBeUndefined();
    expect(openRecipientCms(dec.CiphertextForRecipient!, privateKey).equals(key)).toBe(true);
    const rnd = await kms.send(new GenerateRandomCommand({ NumberOfBytes: 64, Recipient: recipient }));
    expect(openRecipientCms(rnd.CiphertextForRecipient!, privateKey).length).toBe(64);
  });

  it('gives the measured image its data key through the enclave client, again after a restart of KMS', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ekv-kms-'));
    const local = await startKmsEnv({ dir });
    try {
      const gen = await local.enclave().generateDataKey(local.attestGood, { encryptionContext: { store: 'n1' } });
      expect(gen.plaintextKey.length).toBe(32);
      await local.restart(dir);
      const again = await local.enclave().decryptDataKey(gen.ciphertextBlob, local.attestGood, { encryptionContext: { store: 'n1' } });
      expect(again.equals(gen.plaintextKey)).toBe(true);
    } finally {
      await local.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('denies an image with another PCR0: it gets no data key and cannot unseal the first image\'s key', async () => {
    const enclave = env.enclave();
    const gen = await enclave.generateDataKey(env.attestGood);
    const denied = await rejection(enclave.generateDataKey(env.attestOther));
    expect(denied).toBeInstanceOf(KmsError);
    expect((denied as KmsError).code).toBe('KMS_DENIED');
    const cannot = await rejection(enclave.decryptDataKey(gen.ciphertextBlob, env.attestOther));
    expect((cannot as KmsError).code).toBe('KMS_DENIED');
  });

  it('refuses a document the emulator root did not sign, and a tampered CiphertextBlob', async () => {
    const stranger = await startKmsEnv(); // same image, another CA: its documents chain to an unknown root
    try {
      const err = await rejection(env.enclave().generateDataKey(stranger.attestGood));
      expect((err as KmsError).code).toBe('KMS_UNAVAILABLE');
      expect(String((err as KmsError).message)).toMatch(/ValidationException/);
    } finally {
      await stranger.close();
    }
    const enclave = env.enclave();
    const gen = await enclave.generateDataKey(env.attestGood);
    const flipped = Uint8Array.from(gen.ciphertextBlob);
    flipped[10]! ^= 0x40;
    expect(((await rejection(enclave.decryptDataKey(flipped, env.attestGood))) as KmsError).code).toBe('KMS_INVALID_CIPHERTEXT');
  });
});

describe('the enclave client is bound to one key ARN (issue 10, item 1)', () => {
  it('refuses a data key whose blob was made under another key: KMS answers IncorrectKeyException to the named key', async () => {
    const other = env.kms.createKey({ policy: { allowWithoutRecipient: ['GenerateDataKey', 'Decrypt'], recipientConditions: {} } });
    const planted = await env.enclave({ keyArn: other.arn }).generateDataKey(env.attestGood); // a blob of the other key
    const err = await rejection(env.enclave().decryptDataKey(planted.ciphertextBlob, env.attestGood));
    expect((err as KmsError).code).toBe('KMS_WRONG_KEY');
    expect(err.message).toMatch(/IncorrectKeyException/);
    // Control: without naming the key and checking the answer (the test seam), the same blob opens.
    const opened = await env.enclave({ unsafeSkipKeyIdCheck: true }).decryptDataKey(planted.ciphertextBlob, env.attestGood);
    expect(opened.equals(planted.plaintextKey)).toBe(true);
  });

  it('refuses an answer that names anything but the pinned ARN (an alias is not a pin)', async () => {
    const alias = `arn:aws:kms:us-east-1:111122223333:${env.kms.defaultAlias}`;
    const gen = await rejection(env.enclave({ keyArn: alias }).generateDataKey(env.attestGood));
    expect([(gen as KmsError).code, gen.message]).toEqual(['KMS_WRONG_KEY', expect.stringMatching(/answered for key arn:aws:kms:.*:key\//)]);
    const good = await env.enclave().generateDataKey(env.attestGood);
    const dec = await rejection(env.enclave({ keyArn: alias }).decryptDataKey(good.ciphertextBlob, env.attestGood));
    expect((dec as KmsError).code).toBe('KMS_WRONG_KEY');
    expect((await env.enclave().decryptDataKey(good.ciphertextBlob, env.attestGood)).equals(good.plaintextKey)).toBe(true);
  });
});
