/**
 * The emulated KMS operations. Each takes the parsed JSON body and returns the
 * JSON answer, or throws a KmsFault. With a Recipient, the attestation document
 * is verified by the injected verifier (the project's verifyAttestation bound to
 * the emulator's root), the key policy's RecipientAttestation conditions are
 * checked, and secrets go back only as CiphertextForRecipient.
 */
import { randomBytes } from 'node:crypto';
import { buildCiphertextForRecipient } from './kms-cms.ts';
import { KmsFault } from './kms-errors.ts';
import { ciphertextBlobBytesMax, kmsAccountId, type EmulatedKey, type KmsKeyRing } from './kms-keys.ts';
import { checkRecipient, checkWithoutRecipient, type KmsKeyPolicy, type KmsOperation, type RecipientDocument } from './kms-policy.ts';
import {
  blob, dataKeyBytesMax, encryptionContext, int, optionalStr, plaintextBytesMax, recipientDocument, str,
} from './kms-request.ts';

export interface KmsOpsContext {
  ring: KmsKeyRing;
  /** Policy for operations not scoped to a key (GenerateRandom, CreateKey). */
  accountPolicy: KmsKeyPolicy;
  verifyRecipient: (doc: Uint8Array) => Promise<RecipientDocument>;
  onDenied?: (op: KmsOperation, reason: string) => void;
}

type Body = Record<string, unknown>;
type Answer = Record<string, unknown>;

const keyIdCharsMax = 2048;

/** Verifies the document and applies the policy; returns the RSA key (SPKI DER) to wrap secrets to. */
async function authorize(ctx: KmsOpsContext, policy: KmsKeyPolicy, op: KmsOperation, docBytes: Buffer | null): Promise<Uint8Array | null> {
  if (docBytes === null) {
    checkWithoutRecipient(policy, op);
    return null;
  }
  let doc: RecipientDocument;
  try {
    doc = await ctx.verifyRecipient(docBytes);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    throw new KmsFault('ValidationException', `The attestation document is not valid${typeof code === 'string' ? ` (${code})` : ''}`);
  }
  checkRecipient(policy, op, doc);
  if (doc.publicKey === null || doc.publicKey.length === 0) {
    throw new KmsFault('ValidationException', 'The attestation document has no public key');
  }
  return doc.publicKey;
}

function secretAnswer(plaintext: Buffer, recipientKey: Uint8Array | null): Answer {
  return recipientKey === null
    ? { Plaintext: plaintext.toString('base64') }
    : { CiphertextForRecipient: buildCiphertextForRecipient(plaintext, recipientKey).toString('base64') };
}

async function withDenialLog<T>(ctx: KmsOpsContext, op: KmsOperation, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof KmsFault && err.type === 'AccessDeniedException') ctx.onDenied?.(op, err.message);
    throw err;
  }
}

export async function generateDataKey(ctx: KmsOpsContext, body: Body): Promise<Answer> {
  const key = ctx.ring.resolve(str(body, 'KeyId', keyIdCharsMax));
  const spec = optionalStr(body, 'KeySpec', 16);
  const count = int(body, 'NumberOfBytes', 1, dataKeyBytesMax);
  if ((spec === undefined) === (count === undefined)) throw new KmsFault('ValidationException', 'Specify exactly one of KeySpec and NumberOfBytes');
  if (spec !== undefined && spec !== 'AES_256' && spec !== 'AES_128') throw new KmsFault('ValidationException', 'KeySpec must be AES_256 or AES_128');
  const context = encryptionContext(body);
  const recipientKey = await withDenialLog(ctx, 'GenerateDataKey', () => authorize(ctx, key.policy, 'GenerateDataKey', recipientDocument(body)));
  const plaintext = randomBytes(count ?? (spec === 'AES_128' ? 16 : 32));
  try {
    const ciphertextBlob = ctx.ring.seal(key, plaintext, context);
    return { KeyId: key.arn, CiphertextBlob: ciphertextBlob.toString('base64'), ...secretAnswer(plaintext, recipientKey) };
  } finally {
    plaintext.fill(0);
  }
}

export async function decrypt(ctx: KmsOpsContext, body: Body): Promise<Answer> {
  const ciphertext = blob(body, 'CiphertextBlob', ciphertextBlobBytesMax);
  const context = encryptionContext(body);
  const keyRef = optionalStr(body, 'KeyId', keyIdCharsMax);
  const algorithm = optionalStr(body, 'EncryptionAlgorithm', 64);
  if (algorithm !== undefined && algorithm !== 'SYMMETRIC_DEFAULT') throw new KmsFault('ValidationException', 'EncryptionAlgorithm must be SYMMETRIC_DEFAULT');
  const docBytes = recipientDocument(body);
  const { key, plaintext } = ctx.ring.open(ciphertext, context);
  try {
    if (keyRef !== undefined && ctx.ring.resolve(keyRef).keyId !== key.keyId) {
      throw new KmsFault('IncorrectKeyException', 'The key ID in the request does not identify the key that encrypted the ciphertext');
    }
    const recipientKey = await withDenialLog(ctx, 'Decrypt', () => authorize(ctx, key.policy, 'Decrypt', docBytes));
    return { KeyId: key.arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT', ...secretAnswer(plaintext, recipientKey) };
  } finally {
    plaintext.fill(0);
  }
}

export async function encrypt(ctx: KmsOpsContext, body: Body): Promise<Answer> {
  const key = ctx.ring.resolve(str(body, 'KeyId', keyIdCharsMax));
  const plaintext = blob(body, 'Plaintext', plaintextBytesMax);
  const context = encryptionContext(body);
  await withDenialLog(ctx, 'Encrypt', () => authorize(ctx, key.policy, 'Encrypt', null));
  return { KeyId: key.arn, EncryptionAlgorithm: 'SYMMETRIC_DEFAULT', CiphertextBlob: ctx.ring.seal(key, plaintext, context).toString('base64') };
}

export async function generateRandom(ctx: KmsOpsContext, body: Body): Promise<Answer> {
  const count = int(body, 'NumberOfBytes', 1, dataKeyBytesMax);
  if (count === undefined) throw new KmsFault('ValidationException', 'NumberOfBytes is required');
  const recipientKey = await withDenialLog(ctx, 'GenerateRandom', () => authorize(ctx, ctx.accountPolicy, 'GenerateRandom', recipientDocument(body)));
  return secretAnswer(randomBytes(count), recipientKey);
}

export async function createKey(ctx: KmsOpsContext, body: Body): Promise<Answer> {
  const description = optionalStr(body, 'Description', 8192);
  const usage = optionalStr(body, 'KeyUsage', 32) ?? 'ENCRYPT_DECRYPT';
  const spec = optionalStr(body, 'KeySpec', 32) ?? 'SYMMETRIC_DEFAULT';
  if (usage !== 'ENCRYPT_DECRYPT' || spec !== 'SYMMETRIC_DEFAULT') {
    throw new KmsFault('UnsupportedOperationException', 'The emulated KMS only creates SYMMETRIC_DEFAULT ENCRYPT_DECRYPT keys');
  }
  await withDenialLog(ctx, 'CreateKey', () => authorize(ctx, ctx.accountPolicy, 'CreateKey', null));
  // The request's JSON Policy is not interpreted: new keys get the emulator's account policy.
  return { KeyMetadata: keyMetadata(ctx.ring.create({ policy: ctx.accountPolicy, description: description ?? '' })) };
}

export function keyMetadata(key: EmulatedKey): Answer {
  return {
    AWSAccountId: kmsAccountId,
    KeyId: key.keyId,
    Arn: key.arn,
    CreationDate: key.createdAt,
    Enabled: key.enabled,
    Description: key.description,
    KeyUsage: 'ENCRYPT_DECRYPT',
    KeyState: key.enabled ? 'Enabled' : 'Disabled',
    Origin: 'AWS_KMS',
    KeyManager: 'CUSTOMER',
    KeySpec: 'SYMMETRIC_DEFAULT',
    CustomerMasterKeySpec: 'SYMMETRIC_DEFAULT',
    EncryptionAlgorithms: ['SYMMETRIC_DEFAULT'],
    MultiRegion: false,
  };
}
