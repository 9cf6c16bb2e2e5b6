// Property tests: random bytes, random mutations of a real document and random field values never
// produce a crash, a hang or an error other than AttestationError. Runs are bounded (300 each).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AttestationError, ChainCache, decodeAttestationDocument, verifyAttestation, type VerifyPolicy } from '../verifier/index.ts';
import { loadFixtures } from './helpers/nitro-fixtures.ts';
import { encodeCose, encodePayload, encoder } from './helpers/test-ca.ts';

const real = loadFixtures().find((f) => !f.debug)!;
// A shared cache keeps the runs fast; the cache never changes a verdict (test/verifier.test.ts).
const policy: VerifyPolicy = { now: real.timestampMs, cache: new ChainCache() };
const numRuns = 300;

/** Resolves to 'OK' or an error code; anything else thrown fails the property. */
async function outcome(doc: Uint8Array): Promise<string> {
  try {
    await verifyAttestation(doc, policy);
    return 'OK';
  } catch (err) {
    if (!(err instanceof AttestationError)) throw err;
    return err.code;
  }
}

type Mutation =
  | { kind: 'flip'; at: number; mask: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'truncate'; at: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

function mutate(bytes: Uint8Array, mutations: Mutation[]): Uint8Array {
  let out = Buffer.from(bytes);
  for (const m of mutations) {
    const at = m.at % (out.length + 1);
    if (m.kind === 'flip' && at < out.length) out[at] = (out[at] as number) ^ m.mask;
    if (m.kind === 'insert') out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
    if (m.kind === 'delete') out = Buffer.concat([out.subarray(0, at), out.subarray(at + m.count)]);
    if (m.kind === 'truncate') out = out.subarray(0, at);
  }
  return out;
}

/** CBOR-encodable values of every major type, nested a little. */
const cborValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.uint8Array({ maxLength: 1100 }),
    fc.string({ maxLength: 40 }),
    fc.integer(),
    fc.bigInt({ min: -(2n ** 64n) + 1n, max: 2n ** 64n - 1n }),
    fc.constantFrom(null, undefined, true, false, 1.5),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.array(fc.tuple(fc.oneof(fc.integer({ min: -2, max: 40 }), fc.string({ maxLength: 4 })), tie('value')), { maxLength: 5 }).map((e) => new Map(e)),
  ),
})).value;

const payloadKeys = ['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle', 'public_key', 'user_data', 'nonce', 'other'];

describe('hostile input never escapes as anything but AttestationError', () => {
  it('random bytes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) => {
        expect(await outcome(bytes)).not.toBe('OK');
      }),
      { numRuns },
    );
  });

  it('random mutations of a real document', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 4 }), async (mutations) => {
        const doc = mutate(real.bytes, mutations);
        const result = await outcome(doc);
        // Only the unsigned parts (the empty unprotected header) could change without a refusal.
        if (result === 'OK') expect(decodeAttestationDocument(doc).payloadBytes).toEqual(decodeAttestationDocument(real.bytes).payloadBytes);
      }),
      { numRuns },
    );
  });

  it('random values in the payload fields', async () => {
    const d = decodeAttestationDocument(real.bytes);
    const original = encoder.decode(d.payloadBytes) as Map<string, unknown>;
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...payloadKeys), cborValue, fc.boolean(), async (key, value, indefinite) => {
        const payload = new Map(original);
        payload.set(key, value);
        const bytes = encodePayload(payload, indefinite);
        const doc = encodeCose({ protectedHeader: d.protectedHeader, payload: bytes, signature: d.signature });
        const result = await outcome(doc);
        // Setting a field to the value it had re-creates the signed payload; anything else is refused.
        if (Buffer.compare(bytes, d.payloadBytes) !== 0) expect(result).not.toBe('OK');
      }),
      { numRuns },
    );
  });

  it('random mutations inside the certificates (hostile ASN.1 reaches pkijs)', async () => {
    const d = decodeAttestationDocument(real.bytes);
    const original = encoder.decode(d.payloadBytes) as Map<string, unknown>;
    const certs = [...d.cabundle, d.certificate];
    await fc.assert(
      fc.asyncProperty(fc.nat(certs.length - 1), fc.array(mutation, { minLength: 1, maxLength: 3 }), async (which, mutations) => {
        const chain = certs.map((c, i) => (i === which ? mutate(c, mutations) : c));
        const payload = new Map(original);
        payload.set('cabundle', chain.slice(0, -1));
        payload.set('certificate', chain[chain.length - 1]);
        const bytes = encodePayload(payload);
        const doc = encodeCose({ protectedHeader: d.protectedHeader, payload: bytes, signature: d.signature });
        const result = await outcome(doc);
        if (Buffer.compare(bytes, d.payloadBytes) !== 0) expect(result).not.toBe('OK');
      }),
      { numRuns },
    );
  });
});
