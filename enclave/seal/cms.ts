/**
 * Opens KMS's `CiphertextForRecipient`: a CMS ContentInfo/EnvelopedData (BER,
 * often with indefinite lengths and a constructed encryptedContent) with one
 * KeyTransRecipientInfo under RSAES-OAEP-SHA-256 and AES-256-CBC content.
 * pkijs parses the structure; node:crypto does the RSA and AES. Anything else
 * (other algorithms, several recipients, trailing bytes) is refused with
 * KmsError('KMS_BAD_RESPONSE').
 */
import { constants, createDecipheriv, privateDecrypt, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { KmsError } from './errors.ts';

/** KMS answers are a few hundred bytes; a data key or 1 KiB of random fits far below this. */
export const recipientCmsBytesMax = 16 * 1024;

const oid = {
  envelopedData: '1.2.840.113549.1.7.3',
  rsaesOaep: '1.2.840.113549.1.1.7',
  mgf1: '1.2.840.113549.1.1.8',
  sha256: '2.16.840.1.101.3.4.2.1',
  aes256Cbc: '2.16.840.1.101.3.4.1.42',
};

export interface RecipientCms {
  /** The rid (subjectKeyIdentifier) KMS put in the KeyTransRecipientInfo. */
  subjectKeyIdentifier: Buffer;
  encryptedKey: Buffer;
  iv: Buffer;
  /** The encryptedContent, its constructed chunks concatenated. */
  ciphertext: Buffer;
}

function bad(message: string, cause?: unknown): KmsError {
  return new KmsError('KMS_BAD_RESPONSE', `CiphertextForRecipient: ${message}`, { cause });
}

export function parseRecipientCms(ber: Uint8Array): RecipientCms {
  if (ber.length === 0 || ber.length > recipientCmsBytesMax) throw bad(`${ber.length} bytes`);
  const copy = new Uint8Array(ber); // asn1js wants an ArrayBuffer of exactly these bytes
  let asn: ReturnType<typeof asn1js.fromBER>;
  try {
    // asn1js reports most errors by offset -1, but some value decoders (e.g. a malformed
    // GeneralizedTime) throw: either way the answer is not a CMS value we can use.
    asn = asn1js.fromBER(copy.buffer);
  } catch {
    throw bad('not BER');
  }
  if (asn.offset === -1 || asn.offset !== copy.length) throw bad('not one BER value');
  try {
    const info = new pkijs.ContentInfo({ schema: asn.result });
    if (info.contentType !== oid.envelopedData) throw bad(`content type ${info.contentType}`);
    const env = new pkijs.EnvelopedData({ schema: info.content });
    const ri = env.recipientInfos;
    if (ri.length !== 1 || ri[0]!.variant !== 1) throw bad('expected exactly one KeyTransRecipientInfo');
    const ktri = ri[0]!.value as pkijs.KeyTransRecipientInfo;
    checkOaep(ktri.keyEncryptionAlgorithm);
    const eci = env.encryptedContentInfo;
    if (eci.contentEncryptionAlgorithm.algorithmId !== oid.aes256Cbc) throw bad('content encryption is not AES-256-CBC');
    const ivParam = eci.contentEncryptionAlgorithm.algorithmParams;
    if (!(ivParam instanceof asn1js.OctetString) || ivParam.valueBlock.valueHexView.length !== 16) throw bad('bad IV');
    if (eci.encryptedContent === undefined) throw bad('no encryptedContent');
    if (!(ktri.rid instanceof asn1js.OctetString)) throw bad('rid is not a subjectKeyIdentifier');
    return {
      subjectKeyIdentifier: Buffer.from(ktri.rid.valueBlock.valueHexView),
      encryptedKey: Buffer.from(ktri.encryptedKey.valueBlock.valueHexView),
      iv: Buffer.from(ivParam.valueBlock.valueHexView),
      ciphertext: octets(eci.encryptedContent),
    };
  } catch (err) {
    if (err instanceof KmsError) throw err;
    throw bad('malformed EnvelopedData', err);
  }
}

function checkOaep(alg: pkijs.AlgorithmIdentifier): void {
  if (alg.algorithmId !== oid.rsaesOaep) throw bad('key encryption is not RSAES-OAEP');
  const params = new pkijs.RSAESOAEPParams({ schema: alg.algorithmParams });
  const mgfHash = new pkijs.AlgorithmIdentifier({ schema: params.maskGenAlgorithm.algorithmParams });
  if (params.hashAlgorithm.algorithmId !== oid.sha256 || params.maskGenAlgorithm.algorithmId !== oid.mgf1 || mgfHash.algorithmId !== oid.sha256) {
    throw bad('OAEP is not SHA-256 with MGF1-SHA-256');
  }
}

/** A primitive OCTET STRING's bytes, or the concatenation of a constructed one's chunks (BER). */
function octets(s: asn1js.OctetString): Buffer {
  if (!s.idBlock.isConstructed) return Buffer.from(s.valueBlock.valueHexView);
  const parts: Buffer[] = [];
  for (const chunk of s.valueBlock.value) {
    if (!(chunk instanceof asn1js.OctetString)) throw bad('constructed content holds a non-OCTET STRING');
    parts.push(octets(chunk));
  }
  return Buffer.concat(parts);
}

/** Decrypts the content key with our RSA private key, then the content. */
export function openRecipientCms(ber: Uint8Array, privateKey: KeyObject): Buffer {
  const cms = parseRecipientCms(ber);
  let cek: Buffer;
  try {
    cek = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cms.encryptedKey);
  } catch (cause) {
    throw bad('the content key does not decrypt with our key', cause);
  }
  try {
    if (cek.length !== 32) throw bad(`content key of ${cek.length} bytes`);
    const decipher = createDecipheriv('aes-256-cbc', cek, cms.iv);
    return Buffer.concat([decipher.update(cms.ciphertext), decipher.final()]);
  } catch (cause) {
    throw cause instanceof KmsError ? cause : bad('content does not decrypt', cause);
  } finally {
    cek.fill(0);
  }
}
