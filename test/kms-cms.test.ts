// CiphertextForRecipient parsing: the real KMS sample (BER, indefinite lengths, constructed content),
// round trips through the emulator's builder, and hostile mutations that must fail with KmsError only.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildCiphertextForRecipient } from '../emulator/kms-cms.ts';
import { openRecipientCms, parseRecipientCms } from '../enclave/seal/cms.ts';
import { KmsError } from '../enclave/seal/errors.ts';

const sample = readFileSync(new URL('./fixtures/nitro/kms-cms-sample.ber', import.meta.url));
const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = publicKey.export({ format: 'der', type: 'spki' });

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    if (err instanceof KmsError) return err.code;
    throw err;
  }
  return 'OK';
}

describe('CiphertextForRecipient', () => {
  it('parses the real KMS sample: one KeyTransRecipientInfo, OAEP-SHA-256, AES-256-CBC, chunks joined', () => {
    const cms = parseRecipientCms(sample);
    expect(cms.subjectKeyIdentifier.toString('hex')).toBe('7087b55df94ba3255cdf3c01840a2aa3ec93620625d601cf56f97bde7a3d2eb1');
    expect(cms.encryptedKey.length).toBe(256);
    expect(cms.iv.toString('hex')).toBe('688c6d5f7f31b0fecedf09f2e7c99ac9');
    expect(cms.ciphertext.length).toBe(48); // a 32-byte key, CBC-padded
    // Its private key is not public: opening it with ours must fail cleanly.
    expect(codeOf(() => openRecipientCms(sample, privateKey))).toBe('KMS_BAD_RESPONSE');
  });

  it('the emulator builds the same shape, and the enclave opens it', () => {
    const secret = randomBytes(32);
    const ber = buildCiphertextForRecipient(secret, spki);
    const ours = parseRecipientCms(ber);
    const real = parseRecipientCms(sample);
    expect(ours.encryptedKey.length).toBe(real.encryptedKey.length);
    expect(ours.ciphertext.length).toBe(real.ciphertext.length);
    expect(ber.length).toBe(sample.length);
    expect(openRecipientCms(ber, privateKey).equals(secret)).toBe(true);
  });

  it('refuses truncation, trailing bytes and oversize with KMS_BAD_RESPONSE', () => {
    const ber = buildCiphertextForRecipient(randomBytes(32), spki);
    expect(codeOf(() => parseRecipientCms(ber.subarray(0, ber.length - 5)))).toBe('KMS_BAD_RESPONSE');
    expect(codeOf(() => parseRecipientCms(Buffer.concat([ber, Buffer.from([0])])))).toBe('KMS_BAD_RESPONSE');
    expect(codeOf(() => parseRecipientCms(Buffer.alloc(20_000, 0x30)))).toBe('KMS_BAD_RESPONSE');
    expect(codeOf(() => parseRecipientCms(new Uint8Array(0)))).toBe('KMS_BAD_RESPONSE');
  });

  it('a flipped byte anywhere fails with KmsError or decrypts to something; it never throws anything else', () => {
    const secret = randomBytes(32);
    const ber = buildCiphertextForRecipient(secret, spki);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: ber.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const bad = Buffer.from(ber);
        bad[at]! ^= mask;
        const code = codeOf(() => openRecipientCms(bad, privateKey));
        expect(['OK', 'KMS_BAD_RESPONSE']).toContain(code);
      }),
      { numRuns: 150 },
    );
  });
});
