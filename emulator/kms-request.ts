// Field checks for the emulated KMS: every value from the request is typed and bounded here before use.
import { KmsFault } from './kms-errors.ts';

export const kmsBodyBytesMax = 64 * 1024;
export const attestationDocBytesMax = 16 * 1024;
export const plaintextBytesMax = 4096;
export const dataKeyBytesMax = 1024;
const contextPairsMax = 64;
const contextStringBytesMax = 384;

function invalid(message: string): KmsFault {
  return new KmsFault('ValidationException', message);
}

export function str(body: Record<string, unknown>, field: string, max: number): string {
  const v = body[field];
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw invalid(`${field} must be a string of 1..${max} characters`);
  return v;
}

export function optionalStr(body: Record<string, unknown>, field: string, max: number): string | undefined {
  return body[field] === undefined || body[field] === null ? undefined : str(body, field, max);
}

export function int(body: Record<string, unknown>, field: string, min: number, max: number): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalid(`${field} must be an integer in ${min}..${max}`);
  return v;
}

/** Strict base64 (what the SDK sends for blobs), length checked before decoding. */
export function blob(body: Record<string, unknown>, field: string, maxBytes: number): Buffer {
  const v = body[field];
  if (typeof v !== 'string' || v.length === 0 || v.length > Math.ceil(maxBytes / 3) * 4) {
    throw invalid(`${field} must be base64 of 1..${maxBytes} bytes`);
  }
  if (v.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw invalid(`${field} is not base64`);
  return Buffer.from(v, 'base64');
}

export function encryptionContext(body: Record<string, unknown>): Record<string, string> {
  const v = body['EncryptionContext'];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid('EncryptionContext must be a map of strings');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > contextPairsMax) throw invalid('EncryptionContext has too many pairs');
  for (const [k, val] of entries) {
    if (typeof val !== 'string' || k.length > contextStringBytesMax || val.length > contextStringBytesMax) {
      throw invalid('EncryptionContext keys and values must be strings of at most 384 characters');
    }
  }
  return Object.fromEntries(entries) as Record<string, string>;
}

/** The Recipient parameter: null when absent, else the attestation document bytes. */
export function recipientDocument(body: Record<string, unknown>): Buffer | null {
  const r = body['Recipient'];
  if (r === undefined || r === null) return null;
  if (typeof r !== 'object' || Array.isArray(r)) throw invalid('Recipient must be a structure');
  const rec = r as Record<string, unknown>;
  if (rec['KeyEncryptionAlgorithm'] !== 'RSAES_OAEP_SHA_256') throw invalid('Recipient.KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256');
  return blob(rec, 'AttestationDocument', attestationDocBytesMax);
}
