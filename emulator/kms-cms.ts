/**
 * Builds `CiphertextForRecipient` as KMS does: a CMS ContentInfo holding an
 * EnvelopedData with one KeyTransRecipientInfo (subjectKeyIdentifier rid,
 * RSAES-OAEP with SHA-256 and MGF1-SHA-256, to the attestation document's RSA
 * public key) and the plaintext under AES-256-CBC with a fresh key and IV.
 * Same shape as the real sample in test/fixtures/nitro/kms-cms-sample.ber.
 */
import { constants, createCipheriv, createHash, createPublicKey, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { KmsFault } from './kms-errors.ts';

const oid = {
  data: '1.2.840.113549.1.7.1',
  envelopedData: '1.2.840.113549.1.7.3',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  sha256: '2.16.840.1.101.3.4.2.1',
  aes256Cbc: '2.16.840.1.101.3.4.1.42',
};

/** Parses the document's public_key (SPKI DER) and insists on RSA of 2048..4096 bits. */
export function recipientRsaKey(spkiDer: Uint8Array): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spkiDer), format: 'der', type: 'spki' });
  } catch {
    throw new KmsFault('ValidationException', 'The attestation document public key is not a valid SPKI');
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (key.asymmetricKeyType !== 'rsa' || bits < 2048 || bits > 4096) {
    throw new KmsFault('ValidationException', 'The attestation document public key must be RSA 2048..4096');
  }
  return key;
}

export function buildCiphertextForRecipient(plaintext: Uint8Array, spkiDer: Uint8Array): Buffer {
  const rsa = recipientRsaKey(spkiDer);
  const cek = randomBytes(32);
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', cek, iv);
  const content = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const encryptedKey = publicEncrypt({ key: rsa, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
  cek.fill(0);
  const sha256 = new pkijs.AlgorithmIdentifier({ algorithmId: oid.sha256, algorithmParams: new asn1js.Null() });
  const oaepParams = new pkijs.RSAESOAEPParams({
    hashAlgorithm: sha256,
    maskGenAlgorithm: new pkijs.AlgorithmIdentifier({ algorithmId: oid.mgf1, algorithmParams: sha256.toSchema() }),
  });
  const recipient = new pkijs.KeyTransRecipientInfo({
    version: 2,
    rid: new asn1js.OctetString({ valueHex: createHash('sha256').update(spkiDer).digest() }),
    keyEncryptionAlgorithm: new pkijs.AlgorithmIdentifier({ algorithmId: oid.rsaesOaep, algorithmParams: oaepParams.toSchema() }),
    encryptedKey: new asn1js.OctetString({ valueHex: encryptedKey }),
  });
  const enveloped = new pkijs.EnvelopedData({
    version: 2,
    recipientInfos: [new pkijs.RecipientInfo({ variant: 1, value: recipient })],
    encryptedContentInfo: new pkijs.EncryptedContentInfo({
      contentType: oid.data,
      contentEncryptionAlgorithm: new pkijs.AlgorithmIdentifier({
        algorithmId: oid.aes256Cbc,
        algorithmParams: new asn1js.OctetString({ valueHex: iv }),
      }),
      encryptedContent: new asn1js.OctetString({ valueHex: content }),
    }),
  });
  const info = new pkijs.ContentInfo({ contentType: oid.envelopedData, content: enveloped.toSchema() });
  return Buffer.from(info.toSchema().toBER(false));
}
