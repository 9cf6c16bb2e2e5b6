// A small P-384 certificate authority for tests, shaped like AWS's Nitro PKI (root -> intermediates ->
// short-lived leaf), and helpers that build and sign COSE_Sign1 attestation documents with it. It lets
// tests produce valid documents of shapes the real fixtures do not cover (indefinite-length payload map,
// 32 PCRs, empty or 1024-byte optional fields, tag 18) and forgeries that need a key we hold.
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { KeyObject, sign, webcrypto } from 'node:crypto';
import { Encoder, Tag } from 'cbor-x';
import { sigStructure } from '../../verifier/index.ts';

type X509Crypto = NonNullable<Parameters<typeof x509.X509CertificateGenerator.create>[1]>;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const crypto = webcrypto as unknown as X509Crypto;
const ecdsa = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
const hour = 3_600_000;
export const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: false });

export interface TestCa {
  rootPem: string;
  rootDer: Uint8Array;
  /** [root, ...intermediates], as a document's cabundle. */
  cabundle: Uint8Array[];
  leafDer: Uint8Array;
  /** The leaf's private key, to sign documents. */
  leafKey: KeyObject;
  /** The window in which every certificate of the chain is valid. */
  notBefore: number;
  notAfter: number;
}

interface Issued {
  der: Uint8Array;
  keys: CryptoKeyPair;
  name: string;
}

export async function createTestCa(opts: { intermediates?: number; start?: number; leafHours?: number } = {}): Promise<TestCa> {
  const start = opts.start ?? Date.UTC(2025, 0, 1);
  const root = await selfSigned('CN=test-nitro-root', new Date(start - 24 * hour), new Date(start + 365 * 24 * hour), true);
  const chain: Issued[] = [root];
  for (let i = 0; i < (opts.intermediates ?? 2); i++) {
    const parent = chain[chain.length - 1] as Issued;
    chain.push(await issue(parent, `CN=test-intermediate-${i}`, new Date(start - hour), new Date(start + 24 * hour), true));
  }
  const leafEnd = start + (opts.leafHours ?? 3) * hour;
  const leaf = await issue(chain[chain.length - 1] as Issued, 'CN=test-leaf', new Date(start), new Date(leafEnd), false);
  return {
    rootPem: toPem(root.der),
    rootDer: root.der,
    cabundle: chain.map((c) => c.der),
    leafDer: leaf.der,
    leafKey: KeyObject.from(leaf.keys.privateKey),
    notBefore: start,
    notAfter: leafEnd,
  };
}

/** A self-signed certificate with its key: a foreign root, or a leaf that nobody issued. */
export async function selfSignedCert(name: string, start: number, ca: boolean): Promise<{ der: Uint8Array; key: KeyObject; pem: string }> {
  const cert = await selfSigned(name, new Date(start - hour), new Date(start + 24 * hour), ca);
  return { der: cert.der, key: KeyObject.from(cert.keys.privateKey), pem: toPem(cert.der) };
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ecdsa, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function selfSigned(name: string, notBefore: Date, notAfter: Date, ca: boolean): Promise<Issued> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    { name, notBefore, notAfter, keys, signingAlgorithm: ecdsa, extensions: caExtensions(ca) },
    crypto,
  );
  return { der: new Uint8Array(cert.rawData), keys, name };
}

async function issue(issuer: Issued, name: string, notBefore: Date, notAfter: Date, ca: boolean): Promise<Issued> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.create(
    {
      subject: name,
      issuer: issuer.name,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: ecdsa,
      extensions: caExtensions(ca),
    },
    crypto,
  );
  return { der: new Uint8Array(cert.rawData), keys, name };
}

function caExtensions(ca: boolean): x509.Extension[] {
  const usage = ca
    ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature
    : x509.KeyUsageFlags.digitalSignature;
  return [new x509.BasicConstraintsExtension(ca, undefined, true), new x509.KeyUsagesExtension(usage, true)];
}

function toPem(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/** Payload fields as the NSM names them; an `undefined` optional field is written as CBOR null. */
export interface PayloadFields {
  module_id: string;
  digest: string;
  timestamp: number | bigint;
  pcrs: Map<number, Uint8Array>;
  certificate: Uint8Array;
  cabundle: Uint8Array[];
  public_key?: Uint8Array | null;
  user_data?: Uint8Array | null;
  nonce?: Uint8Array | null;
}

export function pcrMap(count: number, length = 48, fill = 0xab): Map<number, Uint8Array> {
  return new Map(Array.from({ length: count }, (_, i) => [i, new Uint8Array(length).fill(i === 0 ? fill : i)]));
}

export function payloadFor(ca: TestCa, overrides: Partial<PayloadFields> = {}): PayloadFields {
  return {
    module_id: 'i-0123456789abcdef0-enc0123456789abcdef',
    digest: 'SHA384',
    timestamp: BigInt(ca.notBefore + 60_000),
    pcrs: pcrMap(16),
    certificate: ca.leafDer,
    cabundle: ca.cabundle,
    public_key: null,
    user_data: null,
    nonce: null,
    ...overrides,
  };
}

/** Encodes map entries in order, definite or indefinite length, duplicates allowed (for forgeries). */
export function encodeMapEntries(entries: Array<[unknown, unknown]>, indefinite = false): Uint8Array {
  const body = entries.flatMap(([k, v]) => [encoder.encode(k), encoder.encode(v)]);
  if (indefinite) return Buffer.concat([Buffer.from([0xbf]), ...body, Buffer.from([0xff])]);
  if (entries.length >= 24) throw new Error('encodeMapEntries: definite maps of 24+ entries are not needed here');
  return Buffer.concat([Buffer.from([0xa0 + entries.length]), ...body]);
}

export function encodePayload(fields: PayloadFields | Map<string, unknown>, indefinite = false): Uint8Array {
  const entries = fields instanceof Map ? [...fields] : Object.entries(fields).map(([k, v]) => [k, v ?? null]);
  return encodeMapEntries(entries as Array<[unknown, unknown]>, indefinite);
}

export const es384Header = new Uint8Array([0xa1, 0x01, 0x38, 0x22]);

export function signPayload(payload: Uint8Array, key: KeyObject, protectedHeader: Uint8Array = es384Header): Uint8Array {
  return sign('sha384', sigStructure(protectedHeader, payload), { key, dsaEncoding: 'ieee-p1363' });
}

export function encodeCose(parts: { protectedHeader: Uint8Array; payload: Uint8Array; signature: Uint8Array }, tagged = false): Uint8Array {
  const array = [parts.protectedHeader, new Map(), parts.payload, parts.signature];
  return encoder.encode(tagged ? new Tag(array, 18) : array);
}

export function buildDocument(ca: TestCa, fields: PayloadFields, opts: { indefinite?: boolean; tagged?: boolean; key?: KeyObject } = {}): Uint8Array {
  const payload = encodePayload(fields, opts.indefinite);
  return encodeCose({ protectedHeader: es384Header, payload, signature: signPayload(payload, opts.key ?? ca.leafKey) }, opts.tagged);
}
