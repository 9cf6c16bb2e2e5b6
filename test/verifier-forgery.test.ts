// Forgeries: real documents mutated one way at a time, and documents signed by a test CA we control,
// each expected to fail with the code of the first check it breaks. The same test CA shows that the
// shapes the NSM is known to emit beyond the real fixtures are accepted.
import { generateKeyPairSync } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { AttestationError, decodeAttestationDocument, verifyAttestation, type AttestationErrorCode, type VerifyPolicy } from '../verifier/index.ts';
import { loadFixtures } from './helpers/nitro-fixtures.ts';
import {
  buildDocument,
  createTestCa,
  encodeCose,
  encodeMapEntries,
  encodePayload,
  encoder,
  es384Header,
  payloadFor,
  pcrMap,
  selfSignedCert,
  signPayload,
  type TestCa,
} from './helpers/test-ca.ts';

const real = loadFixtures().find((f) => !f.debug && f.nonceBytes !== null)!;
const atReal: VerifyPolicy = { now: real.timestampMs, cache: false };

async function codeOf(doc: Uint8Array, policy: VerifyPolicy): Promise<AttestationErrorCode | 'OK'> {
  try {
    await verifyAttestation(doc, policy);
    return 'OK';
  } catch (err) {
    if (err instanceof AttestationError) return err.code;
    throw err;
  }
}

/** The real document with its payload map edited, keeping the original header and signature. */
function withPayload(edit: (payload: Map<string, unknown>) => void, opts: { indefinite?: boolean } = {}): Uint8Array {
  const d = decodeAttestationDocument(real.bytes);
  const payload = encoder.decode(d.payloadBytes) as Map<string, unknown>;
  edit(payload);
  const bytes = encodePayload(payload, opts.indefinite ?? payload.size >= 24);
  return encodeCose({ protectedHeader: d.protectedHeader, payload: bytes, signature: d.signature });
}

function flipByteAt(bytes: Uint8Array, index: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[index] = (out[index] as number) ^ 0x01;
  return out;
}

describe('mutated real documents', () => {
  it('the unmutated document and its re-encoding verify (the helpers change nothing by themselves)', async () => {
    expect(await codeOf(real.bytes, atReal)).toBe('OK');
    expect(await codeOf(withPayload(() => {}), atReal)).toBe('OK');
  });

  it('a flipped signature byte: BAD_SIGNATURE', async () => {
    expect(await codeOf(flipByteAt(real.bytes, real.bytes.length - 1), atReal)).toBe('BAD_SIGNATURE');
    expect(await codeOf(flipByteAt(real.bytes, real.bytes.length - 96), atReal)).toBe('BAD_SIGNATURE');
  });

  it('a changed PCR value: BAD_SIGNATURE', async () => {
    const at = Buffer.from(real.bytes).indexOf(Buffer.from(real.pcr0, 'hex'));
    expect(at).toBeGreaterThan(0);
    expect(await codeOf(flipByteAt(real.bytes, at + 7), atReal)).toBe('BAD_SIGNATURE');
  });

  it('a changed timestamp or module id: BAD_SIGNATURE', async () => {
    expect(await codeOf(withPayload((p) => p.set('timestamp', BigInt(real.timestampMs + 1))), atReal)).toBe('BAD_SIGNATURE');
    expect(await codeOf(withPayload((p) => p.set('module_id', 'i-0000000000000000-enc0000000000000000')), atReal)).toBe('BAD_SIGNATURE');
  });

  it('the payload re-encoded with an indefinite-length map: BAD_SIGNATURE (the bytes as received are what is signed)', async () => {
    expect(await codeOf(withPayload(() => {}, { indefinite: true }), atReal)).toBe('BAD_SIGNATURE');
  });

  it('a swapped cabundle: BAD_CHAIN', async () => {
    const doc = withPayload((p) => {
      const b = p.get('cabundle') as Uint8Array[];
      p.set('cabundle', [b[0], b[2], b[1], b[3]]);
    });
    expect(await codeOf(doc, atReal)).toBe('BAD_CHAIN');
  });

  it('a truncated cabundle: BAD_CHAIN without an intermediate, UNTRUSTED_ROOT without the root, MALFORMED when empty', async () => {
    const cut = (f: (b: Uint8Array[]) => Uint8Array[]) => withPayload((p) => p.set('cabundle', f(p.get('cabundle') as Uint8Array[])));
    expect(await codeOf(cut((b) => b.slice(0, 3)), atReal)).toBe('BAD_CHAIN');
    expect(await codeOf(cut((b) => [b[0]!, b[1]!, b[3]!]), atReal)).toBe('BAD_CHAIN');
    expect(await codeOf(cut((b) => b.slice(1)), atReal)).toBe('UNTRUSTED_ROOT');
    expect(await codeOf(cut(() => []), atReal)).toBe('MALFORMED');
  });

  it('a duplicated intermediate or a cabundle entry that is not a certificate: BAD_CHAIN', async () => {
    const cut = (f: (b: Uint8Array[]) => Uint8Array[]) => withPayload((p) => p.set('cabundle', f(p.get('cabundle') as Uint8Array[])));
    expect(await codeOf(cut((b) => [b[0]!, b[1]!, b[1]!, b[2]!, b[3]!]), atReal)).toBe('BAD_CHAIN');
    expect(await codeOf(cut((b) => [b[0]!, b[1]!, new Uint8Array(100).fill(0x30), b[3]!]), atReal)).toBe('BAD_CHAIN');
  });

  it('a foreign root in cabundle[0], or a policy trusting only a foreign root: UNTRUSTED_ROOT', async () => {
    const foreign = await selfSignedCert('CN=aws.nitro-enclaves', real.timestampMs, true);
    const doc = withPayload((p) => p.set('cabundle', [foreign.der, ...(p.get('cabundle') as Uint8Array[]).slice(1)]));
    expect(await codeOf(doc, atReal)).toBe('UNTRUSTED_ROOT');
    expect(await codeOf(real.bytes, { ...atReal, roots: [foreign.pem] })).toBe('UNTRUSTED_ROOT');
  });

  it('a self-signed leaf with the payload signed by its key: BAD_CHAIN', async () => {
    const leaf = await selfSignedCert('CN=i-0000-enc0000', real.timestampMs, false);
    const d = decodeAttestationDocument(real.bytes);
    const payload = encoder.decode(d.payloadBytes) as Map<string, unknown>;
    payload.set('certificate', leaf.der);
    const bytes = encodePayload(payload);
    const doc = encodeCose({ protectedHeader: es384Header, payload: bytes, signature: signPayload(bytes, leaf.key) });
    expect(await codeOf(doc, atReal)).toBe('BAD_CHAIN');
  });

  it('the payload re-signed with another key under the genuine chain: BAD_SIGNATURE', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const d = decodeAttestationDocument(real.bytes);
    const doc = encodeCose({ protectedHeader: d.protectedHeader, payload: d.payloadBytes, signature: signPayload(d.payloadBytes, privateKey) });
    expect(await codeOf(doc, atReal)).toBe('BAD_SIGNATURE');
  });

  it('a leaf and intermediates of another CA grafted under the AWS root: BAD_CHAIN', async () => {
    const ca = await createTestCa({ start: real.timestampMs - 60_000 });
    const d = decodeAttestationDocument(real.bytes);
    const payload = encoder.decode(d.payloadBytes) as Map<string, unknown>;
    payload.set('cabundle', [d.cabundle[0]!, ...ca.cabundle.slice(1)]);
    payload.set('certificate', ca.leafDer);
    const bytes = encodePayload(payload);
    const doc = encodeCose({ protectedHeader: es384Header, payload: bytes, signature: signPayload(bytes, ca.leafKey) });
    expect(await codeOf(doc, atReal)).toBe('BAD_CHAIN');
  });

  it('a wrong or extended protected header: MALFORMED', async () => {
    const header = Buffer.from(real.bytes).indexOf(Buffer.from('44a1013822', 'hex'));
    expect(header).toBe(1);
    expect(await codeOf(flipByteAt(real.bytes, header + 4), atReal)).toBe('MALFORMED'); // alg -36 (ES512)
    const d = decodeAttestationDocument(real.bytes);
    const alg = (h: Uint8Array) => encodeCose({ protectedHeader: h, payload: d.payloadBytes, signature: d.signature });
    expect(await codeOf(alg(encodeMapEntries([[1, -7]])), atReal)).toBe('MALFORMED'); // ES256
    expect(await codeOf(alg(encodeMapEntries([[1, 'ES384']])), atReal)).toBe('MALFORMED');
    expect(await codeOf(alg(encodeMapEntries([[1, -35], [2, [99]]])), atReal)).toBe('MALFORMED'); // crit
    expect(await codeOf(alg(encodeMapEntries([[1, -35], [1, -35]])), atReal)).toBe('MALFORMED'); // duplicate
    expect(await codeOf(alg(new Uint8Array(0)), atReal)).toBe('MALFORMED');
  });

  it('oversized or undersized fields: MALFORMED', async () => {
    const set = (key: string, value: unknown) => withPayload((p) => p.set(key, value));
    for (const key of ['public_key', 'user_data', 'nonce']) {
      expect(await codeOf(set(key, new Uint8Array(1025)), atReal)).toBe('MALFORMED');
    }
    expect(await codeOf(set('certificate', new Uint8Array(1025)), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('certificate', new Uint8Array(0)), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('pcrs', pcrMap(33)), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('pcrs', new Map()), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('pcrs', new Map([[32, new Uint8Array(48)]])), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('pcrs', new Map([[0, new Uint8Array(47)]])), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('pcrs', new Map([[-1, new Uint8Array(48)]])), atReal)).toBe('MALFORMED');
    const b = decodeAttestationDocument(real.bytes).cabundle;
    expect(await codeOf(set('cabundle', [...b, ...b, b[0]]), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('module_id', 'x'.repeat(257)), atReal)).toBe('MALFORMED');
    const huge = Buffer.concat([real.bytes, new Uint8Array(40_000)]);
    expect(await codeOf(huge, atReal)).toBe('MALFORMED');
  });

  it('wrong types and missing mandatory fields: MALFORMED', async () => {
    const set = (key: string, value: unknown) => withPayload((p) => p.set(key, value));
    expect(await codeOf(set('timestamp', String(real.timestampMs)), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('timestamp', -5), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('digest', 'SHA256'), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('nonce', 'abc'), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('pcrs', [new Uint8Array(48)]), atReal)).toBe('MALFORMED');
    expect(await codeOf(set('cabundle', 'x'), atReal)).toBe('MALFORMED');
    for (const key of ['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle']) {
      expect(await codeOf(withPayload((p) => p.delete(key)), atReal)).toBe('MALFORMED');
    }
  });

  it('trailing garbage, truncation, a wrong tag, a wrong array: MALFORMED', async () => {
    expect(await codeOf(Buffer.concat([real.bytes, Buffer.from([0x00])]), atReal)).toBe('MALFORMED');
    expect(await codeOf(real.bytes.subarray(0, real.bytes.length - 1), atReal)).toBe('MALFORMED');
    expect(await codeOf(Buffer.concat([Buffer.from([0xd1]), real.bytes]), atReal)).toBe('MALFORMED'); // tag 17
    expect(await codeOf(new Uint8Array(0), atReal)).toBe('MALFORMED');
    expect(await codeOf(encoder.encode([1, 2, 3, 4]), atReal)).toBe('MALFORMED');
    expect(await codeOf(encoder.encode('hello'), atReal)).toBe('MALFORMED');
  });

  it('deep nesting, shared references and huge declared lengths: MALFORMED, quickly', async () => {
    const start = Date.now();
    expect(await codeOf(Buffer.alloc(32_000, 0x81), atReal)).toBe('MALFORMED'); // [[[[...]]]]
    expect(await codeOf(Buffer.alloc(32_000, 0x9f), atReal)).toBe('MALFORMED'); // indefinite arrays
    expect(await codeOf(Buffer.concat(Array(10_000).fill(Buffer.from([0xa1, 0x00]))), atReal)).toBe('MALFORMED');
    expect(await codeOf(Buffer.from('d81c81d81d00', 'hex'), atReal)).toBe('MALFORMED'); // tag 28/29 cycle
    expect(await codeOf(Buffer.from('845bffffffffffffffff', 'hex'), atReal)).toBe('MALFORMED'); // 2^64-1 byte string
    const d = decodeAttestationDocument(real.bytes);
    const deep = encodeCose({ protectedHeader: d.protectedHeader, payload: Buffer.alloc(30_000, 0x81), signature: d.signature });
    expect(await codeOf(deep, atReal)).toBe('MALFORMED');
    expect(Date.now() - start).toBeLessThan(5_000);
  });

  it('a tag-18 wrapper around the genuine document: accepted (the tag is outside the signature)', async () => {
    const tagged = Buffer.concat([Buffer.from([0xd2]), real.bytes]);
    expect(decodeAttestationDocument(tagged).tagged).toBe(true);
    expect(await codeOf(tagged, atReal)).toBe('OK');
  });

  it('reports structure before chain, and chain before signature', async () => {
    // A foreign root and a flipped signature: the chain fails first.
    const foreign = await selfSignedCert('CN=x', real.timestampMs, true);
    const doc = withPayload((p) => p.set('cabundle', [foreign.der, ...(p.get('cabundle') as Uint8Array[]).slice(1)]));
    expect(await codeOf(flipByteAt(doc, doc.length - 1), atReal)).toBe('UNTRUSTED_ROOT');
    // Expired and badly signed: EXPIRED.
    expect(await codeOf(flipByteAt(real.bytes, real.bytes.length - 1), { cache: false })).toBe('EXPIRED');
    // Malformed and expired: MALFORMED.
    expect(await codeOf(Buffer.concat([real.bytes, Buffer.from([0])]), { cache: false })).toBe('MALFORMED');
  });
});

describe('documents signed by a test CA', () => {
  let ca: TestCa;
  let at: VerifyPolicy;
  beforeAll(async () => {
    ca = await createTestCa();
    at = { roots: [ca.rootPem], now: ca.notBefore + 60_000, cache: false };
  });

  it('a plain document verifies with the test root, and not with the default roots', async () => {
    const doc = buildDocument(ca, payloadFor(ca));
    expect(await codeOf(doc, at)).toBe('OK');
    expect(await codeOf(doc, { ...at, roots: undefined })).toBe('UNTRUSTED_ROOT');
  });

  it('accepts an indefinite-length payload map', async () => {
    const doc = buildDocument(ca, payloadFor(ca), { indefinite: true });
    expect(decodeAttestationDocument(doc).payloadBytes[0]).toBe(0xbf);
    expect(await codeOf(doc, at)).toBe('OK');
  });

  it('accepts more than 16 PCRs (up to 32), and 32- or 64-byte registers', async () => {
    for (const pcrs of [pcrMap(17), pcrMap(32), pcrMap(16, 32), pcrMap(16, 64)]) {
      const doc = buildDocument(ca, payloadFor(ca, { pcrs }));
      const verified = await verifyAttestation(doc, at);
      expect(verified.pcrs.size).toBe(pcrs.size);
    }
  });

  it('accepts empty and 1024-byte optional fields, and absent keys', async () => {
    const full = new Uint8Array(1024).fill(7);
    const doc = buildDocument(ca, payloadFor(ca, { public_key: full, user_data: new Uint8Array(0), nonce: full }));
    const v = await verifyAttestation(doc, at);
    expect(v.publicKey?.length).toBe(1024);
    expect(v.userData?.length).toBe(0);
    expect(v.nonce?.length).toBe(1024);
    const fields = payloadFor(ca);
    const absent = new Map<string, unknown>(Object.entries(fields).filter(([k]) => !['public_key', 'user_data', 'nonce'].includes(k)));
    const payload = encodePayload(absent);
    const doc2 = encodeCose({ protectedHeader: es384Header, payload, signature: signPayload(payload, ca.leafKey) });
    const v2 = await verifyAttestation(doc2, at);
    expect([v2.publicKey, v2.userData, v2.nonce]).toEqual([null, null, null]);
  });

  it('accepts a tag-18 wrapper and ignores unknown keys (which the signature covers)', async () => {
    expect(await codeOf(buildDocument(ca, payloadFor(ca), { tagged: true }), at)).toBe('OK');
    const extra = new Map<string, unknown>([...Object.entries(payloadFor(ca)), ['future_field', { a: 1 }]]);
    const payload = encodePayload(extra);
    expect(await codeOf(encodeCose({ protectedHeader: es384Header, payload, signature: signPayload(payload, ca.leafKey) }), at)).toBe('OK');
  });

  it('refuses duplicate keys even under a valid signature: MALFORMED', async () => {
    const entries = Object.entries(payloadFor(ca)) as Array<[unknown, unknown]>;
    const signed = (payload: Uint8Array) => encodeCose({ protectedHeader: es384Header, payload, signature: signPayload(payload, ca.leafKey) });
    const dupNonce = encodeMapEntries([...entries, ['nonce', new Uint8Array(8)]], true);
    expect(await codeOf(signed(dupNonce), at)).toBe('MALFORMED');
    const pcrs = encodeMapEntries([[0, new Uint8Array(48).fill(1)], [1, new Uint8Array(48)], [0, new Uint8Array(48).fill(2)]]);
    const withDupPcr = Buffer.concat([
      encodeMapEntries(entries.filter(([k]) => k !== 'pcrs'), true).subarray(0, -1),
      encoder.encode('pcrs'),
      pcrs,
      Buffer.from([0xff]),
    ]);
    expect(await codeOf(signed(withDupPcr), at)).toBe('MALFORMED');
    // A PCR index written as a 64-bit integer and again as a small one is the same index.
    const mixed = Buffer.from('a2' + '00' + '5830' + '01'.repeat(48) + '1b0000000000000000' + '5830' + '02'.repeat(48), 'hex');
    const withMixedPcr = Buffer.concat([
      encodeMapEntries(entries.filter(([k]) => k !== 'pcrs'), true).subarray(0, -1),
      encoder.encode('pcrs'),
      mixed,
      Buffer.from([0xff]),
    ]);
    expect(await codeOf(signed(withMixedPcr), at)).toBe('MALFORMED');
  });

  it('refuses a payload signed by another key: BAD_SIGNATURE', async () => {
    const other = await createTestCa();
    expect(await codeOf(buildDocument(ca, payloadFor(ca), { key: other.leafKey }), at)).toBe('BAD_SIGNATURE');
  });

  it('refuses a chain that does not reach the leaf: BAD_CHAIN', async () => {
    const other = await createTestCa();
    // The other CA's leaf, signing correctly, under our root and intermediates.
    const fields = payloadFor(ca, { certificate: other.leafDer });
    expect(await codeOf(buildDocument(ca, fields, { key: other.leafKey }), at)).toBe('BAD_CHAIN');
    // The root alone, with the leaf issued by an intermediate left out.
    expect(await codeOf(buildDocument(ca, payloadFor(ca, { cabundle: [ca.rootDer] })), at)).toBe('BAD_CHAIN');
  });

  it('checks validity at now with the clock skew', async () => {
    const doc = buildDocument(ca, payloadFor(ca));
    expect(await codeOf(doc, { ...at, now: ca.notAfter + 59_000 })).toBe('OK');
    expect(await codeOf(doc, { ...at, now: ca.notAfter + 61_000 })).toBe('EXPIRED');
    expect(await codeOf(doc, { ...at, now: ca.notAfter + 1_000, clockSkewMs: 0 })).toBe('EXPIRED');
    expect(await codeOf(doc, { ...at, now: ca.notBefore - 59_000 })).toBe('OK');
    expect(await codeOf(doc, { ...at, now: ca.notBefore - 61_000 })).toBe('EXPIRED');
  });

  it('reports leafNotAfter, the leaf certificate expiry', async () => {
    const v = await verifyAttestation(buildDocument(ca, payloadFor(ca)), at);
    expect(v.leafNotAfter).toBe(ca.notAfter);
  });
});
