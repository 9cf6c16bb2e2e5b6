// Structural decoding of a Nitro attestation document (COSE_Sign1, RFC 9052, with the payload map of
// AWS's NSM API). No cryptography here: this is the first stage of the pipeline and everything that
// fails it is MALFORMED. Synchronous, so other modules can inspect documents they build.
import { Tag } from 'cbor-x';
import { decodeStrict } from './cbor.ts';
import {
  cabundleLengthMax,
  cabundleLengthMin,
  certificateBytesMax,
  certificateBytesMin,
  coseAlgEs384,
  documentBytesMax,
  moduleIdLengthMax,
  optionalFieldBytesMax,
  pcrCountMax,
  pcrCountMin,
  pcrIndexMax,
  pcrValueLengths,
  protectedHeaderBytesMax,
  signatureBytes,
} from './constants.ts';
import { malformed } from './errors.ts';

/** COSE_Sign1 is tag 18; the NSM sends it untagged. */
const coseSign1Tag = 18;
const headerAlg = 1;
const headerCrit = 2;

/** The payload fields of an attestation document (timestamp in ms; null = absent). */
export interface AttestationFields {
  moduleId: string;
  digest: 'SHA384';
  timestamp: number;
  pcrs: Map<number, Uint8Array>;
  certificate: Uint8Array;
  cabundle: Uint8Array[];
  publicKey: Uint8Array | null;
  userData: Uint8Array | null;
  nonce: Uint8Array | null;
}

/** A document's contents before any check of its chain or signature. Byte fields view the input. */
export interface DecodedAttestationDocument extends AttestationFields {
  /** The serialized protected header, as signed. */
  protectedHeader: Uint8Array;
  /** The raw ES384 signature, r || s. */
  signature: Uint8Array;
  /** The payload exactly as received: the bytes the signature covers. */
  payloadBytes: Uint8Array;
  /** Whether the COSE_Sign1 came wrapped in tag 18. */
  tagged: boolean;
}

export function decodeAttestationDocument(bytes: Uint8Array): DecodedAttestationDocument {
  if (!(bytes instanceof Uint8Array)) throw malformed('the document must be a Uint8Array');
  if (bytes.length === 0 || bytes.length > documentBytesMax) {
    throw malformed(`the document is ${bytes.length} bytes, outside 1..${documentBytesMax}`);
  }
  let outer = decodeStrict(bytes, 'the document', true);
  let tagged = false;
  if (outer instanceof Tag) {
    if (outer.tag !== coseSign1Tag) throw malformed(`the document has tag ${outer.tag}, not COSE_Sign1 (18)`);
    outer = outer.value;
    tagged = true;
  }
  if (!Array.isArray(outer) || outer.length !== 4) throw malformed('the document is not a 4-element COSE_Sign1 array');
  const [protectedHeader, unprotected, payloadBytes, signature] = outer as unknown[];
  checkProtectedHeader(protectedHeader);
  if (!(unprotected instanceof Map)) throw malformed('the unprotected header is not a map');
  const payload = bytesIn(payloadBytes, 1, documentBytesMax, 'payload');
  const sig = bytesIn(signature, signatureBytes, signatureBytes, 'signature');
  return {
    ...decodePayload(payload),
    protectedHeader: protectedHeader as Uint8Array,
    signature: sig,
    payloadBytes: payload,
    tagged,
  };
}

/** The protected header must name ES384 and must not ask us to understand extra (critical) headers. */
function checkProtectedHeader(value: unknown): void {
  const header = decodeStrict(bytesIn(value, 1, protectedHeaderBytesMax, 'protected header'), 'the protected header');
  if (!(header instanceof Map)) throw malformed('the protected header is not a map');
  const alg = header.get(headerAlg);
  if (alg !== coseAlgEs384) throw malformed(`the protected header alg is ${String(alg)}, not ES384 (-35)`);
  if (header.has(headerCrit)) throw malformed('the protected header has critical parameters');
}

function decodePayload(payload: Uint8Array): Omit<DecodedAttestationDocument, 'protectedHeader' | 'signature' | 'payloadBytes' | 'tagged'> {
  const map = decodeStrict(payload, 'the payload');
  if (!(map instanceof Map)) throw malformed('the payload is not a map');
  const digest = map.get('digest');
  if (digest !== 'SHA384') throw malformed(`digest is ${JSON.stringify(String(digest))}, not "SHA384"`);
  return {
    moduleId: moduleIdOf(map.get('module_id')),
    digest,
    timestamp: timestampOf(map.get('timestamp')),
    pcrs: pcrsOf(map.get('pcrs')),
    certificate: bytesIn(map.get('certificate'), certificateBytesMin, certificateBytesMax, 'certificate'),
    cabundle: cabundleOf(map.get('cabundle')),
    publicKey: optionalBytes(map, 'public_key'),
    userData: optionalBytes(map, 'user_data'),
    nonce: optionalBytes(map, 'nonce'),
  };
}

function moduleIdOf(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > moduleIdLengthMax) {
    throw malformed(`module_id must be a text string of 1..${moduleIdLengthMax} characters`);
  }
  return value;
}

/** Milliseconds since the epoch; cbor-x returns 8-byte integers as bigint. */
function timestampOf(value: unknown): number {
  const n = typeof value === 'bigint' && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) {
    throw malformed('timestamp must be a positive integer (milliseconds)');
  }
  return n;
}

function pcrsOf(value: unknown): Map<number, Uint8Array> {
  if (!(value instanceof Map)) throw malformed('pcrs is not a map');
  if (value.size < pcrCountMin || value.size > pcrCountMax) {
    throw malformed(`pcrs has ${value.size} entries, outside ${pcrCountMin}..${pcrCountMax}`);
  }
  const pcrs = new Map<number, Uint8Array>();
  for (const [key, pcr] of value) {
    const index = typeof key === 'bigint' && key <= BigInt(pcrIndexMax) ? Number(key) : key;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index > pcrIndexMax) {
      throw malformed(`a PCR index is not an integer in 0..${pcrIndexMax}`);
    }
    // A bigint and a number key are distinct to cbor-x's Map, so duplicates are checked again here.
    if (pcrs.has(index)) throw malformed(`PCR${index} appears twice`);
    if (!(pcr instanceof Uint8Array) || !pcrValueLengths.includes(pcr.length)) {
      throw malformed(`PCR${index} must be a byte string of ${pcrValueLengths.join('/')} bytes`);
    }
    pcrs.set(index, pcr);
  }
  return pcrs;
}

function cabundleOf(value: unknown): Uint8Array[] {
  if (!Array.isArray(value) || value.length < cabundleLengthMin || value.length > cabundleLengthMax) {
    throw malformed(`cabundle must be an array of ${cabundleLengthMin}..${cabundleLengthMax} certificates`);
  }
  return value.map((cert, i) => bytesIn(cert, certificateBytesMin, certificateBytesMax, `cabundle[${i}]`));
}

/** Optional fields: an absent key and CBOR null both mean "not supplied". */
function optionalBytes(map: Map<unknown, unknown>, key: string): Uint8Array | null {
  if (!map.has(key)) return null;
  const value = map.get(key);
  if (value === null) return null;
  return bytesIn(value, 0, optionalFieldBytesMax, key);
}

function bytesIn(value: unknown, min: number, max: number, what: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw malformed(`${what} is not a byte string`);
  if (value.length < min || value.length > max) {
    throw malformed(`${what} is ${value.length} bytes, outside ${min}..${max}`);
  }
  return value;
}
