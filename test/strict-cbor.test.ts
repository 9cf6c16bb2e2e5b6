// The one decoder of untrusted CBOR (verifier/strict-cbor.ts): hostile shapes are refused before
// cbor-x allocates anything, with each site's typed error; what our encoders write still decodes.
import { Encoder } from 'cbor-x';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { EkvError } from '../protocol/errors.ts';
import { decodeStrict } from '../verifier/cbor.ts';
import { decodeAttestationDocument } from '../verifier/decode.ts';
import { AttestationError } from '../verifier/errors.ts';
import { CborRefused, decodeUntrustedCbor, scanCbor } from '../verifier/strict-cbor.ts';
import { bignum, deepArrays, head, helloWith, hostileShapes, hugeDeclared, packedTableBomb } from './helpers/hostile-cbor.ts';
import { loadFixtures } from './helpers/nitro-fixtures.ts';

function refusal(run: () => unknown): CborRefused {
  try {
    run();
  } catch (err) {
    if (err instanceof CborRefused) return err;
    throw err;
  }
  throw new Error('accepted');
}

describe('strict CBOR: hostile shapes', () => {
  for (const { name, bytes } of hostileShapes()) {
    it(`refuses ${name} as PROTOCOL (hello) and MALFORMED (verifier)`, () => {
      expect(() => decodeCbor(bytes)).toThrow(EkvError);
      expect(() => decodeCbor(bytes)).toThrow(/malformed CBOR/);
      // Nitro documents may use indefinite maps, so the verifier refuses that one later, by shape.
      if (name !== 'indefinite map') expect(() => decodeStrict(bytes, 'the document', true)).toThrow(AttestationError);
    });
  }

  it('refuses the 30-level tag-51/225 bomb (2^30 elements) at its first tag, and bignums of 128 and 256 KiB', () => {
    const bomb = packedTableBomb(30);
    expect(bomb.length).toBeLessThan(1024);
    expect(refusal(() => decodeUntrustedCbor(bomb, { maps: 'object' })).reason).toBe('TAG');
    for (const kib of [24, 128, 256]) {
      expect(refusal(() => decodeUntrustedCbor(bignum(kib * 1024), { maps: 'object' })).reason).toBe('TAG');
      expect(refusal(() => decodeUntrustedCbor(bignum(kib * 1024, true), { maps: 'map', outerTag: 18 })).reason).toBe('TAG');
    }
  });

  it('names the bound that refused each shape', () => {
    const o = { maps: 'object' } as const;
    expect(refusal(() => scanCbor(deepArrays(17), o)).reason).toBe('DEPTH');
    expect(scanCbor(deepArrays(16), o)).toBe(0);
    expect(refusal(() => scanCbor(hugeDeclared(4, 2 ** 32 - 1), o)).reason).toBe('LENGTH');
    expect(refusal(() => scanCbor(hugeDeclared(5, 5), o)).reason).toBe('LENGTH');
    expect(refusal(() => scanCbor(hugeDeclared(2, 9), o)).reason).toBe('LENGTH');
    expect(refusal(() => scanCbor(Buffer.from([0x9f, 0xff]), o)).reason).toBe('INDEFINITE');
    expect(scanCbor(Buffer.from([0x9f, 0xff]), { ...o, indefinite: true })).toBe(0);
    expect(refusal(() => scanCbor(Buffer.concat([head(4, 3), Buffer.alloc(3)]), { ...o, itemsMax: 3 })).reason).toBe('ITEMS');
    expect(refusal(() => scanCbor(Buffer.from([0x00, 0x00]), o)).reason).toBe('TRAILING');
    expect(refusal(() => scanCbor(Buffer.from([0x82, 0x81, 0x00]), o)).reason).toBe('TRUNCATED');
    expect(refusal(() => scanCbor(Buffer.from([0xf8, 0x20]), o)).reason).toBe('SIMPLE');
    expect(refusal(() => scanCbor(Buffer.from([0x1c]), o)).reason).toBe('RESERVED');
    expect(refusal(() => scanCbor(Buffer.from([0xff]), o)).reason).toBe('RESERVED');
    expect(refusal(() => scanCbor(Buffer.from([]), o)).reason).toBe('EMPTY');
    expect(refusal(() => scanCbor(Buffer.from([0xa1, 0x01, 0x02]), o)).reason).toBe('KEY');
    expect(scanCbor(Buffer.from([0xa1, 0x01, 0x02]), { maps: 'map' })).toBe(1);
    // An indefinite text string whose chunk is a byte string.
    expect(refusal(() => scanCbor(Buffer.from([0x7f, 0x41, 0x61, 0xff]), { ...o, indefinite: true })).reason).toBe('RESERVED');
    expect(refusal(() => scanCbor(Buffer.from([0xbf, 0x61, 0x61, 0xff]), { ...o, indefinite: true })).reason).toBe('LENGTH');
  });

  it('allows the outer tag only on the outermost item', () => {
    const tagged = Buffer.concat([head(6, 18), head(4, 0)]);
    expect(scanCbor(tagged, { maps: 'map', outerTag: 18 })).toBe(0);
    expect(refusal(() => scanCbor(tagged, { maps: 'map' })).reason).toBe('TAG');
    expect(refusal(() => scanCbor(Buffer.concat([head(4, 1), tagged]), { maps: 'map', outerTag: 18 })).reason).toBe('TAG');
    expect(refusal(() => scanCbor(Buffer.concat([head(6, 18), tagged]), { maps: 'map', outerTag: 18 })).reason).toBe('TAG');
  });

  it('refuses duplicate map keys in both map forms, at any depth', () => {
    const dup = Buffer.from([0x81, 0xa2, 0x61, 0x61, 0x00, 0x61, 0x61, 0x01]); // [{a:0, a:1}]
    expect(refusal(() => decodeUntrustedCbor(dup, { maps: 'object' })).reason).toBe('DUPLICATE_KEY');
    expect(refusal(() => decodeUntrustedCbor(dup, { maps: 'map' })).reason).toBe('DUPLICATE_KEY');
    expect(() => decodeStrict(dup, 'x')).toThrow(/duplicate map key/);
    // "__proto__" is an ordinary key and cannot reach the prototype.
    const proto = decodeCbor(encodeCbor({ ['__proto__']: 1, a: 2 } as never)) as Record<string, unknown>;
    expect(Object.getPrototypeOf(proto)).toBe(Object.prototype);
  });

  it('refuses object keys that would shadow Object.prototype (String(msg.t) threw a TypeError; found by the fuzzer)', () => {
    for (const key of ['toString', 'valueOf', 'constructor', 'hasOwnProperty']) {
      const shadow = Buffer.concat([head(5, 1), head(3, 1), Buffer.from('t'), head(5, 1), head(3, key.length), Buffer.from(key), head(3, 1), Buffer.from('x')]);
      expect(refusal(() => decodeUntrustedCbor(shadow, { maps: 'object' })).reason).toBe('KEY');
      expect(() => decodeCbor(shadow)).toThrow(EkvError);
    }
    // Maps keep any key: a Map has no string conversion to hijack.
    const asMap = Buffer.concat([head(5, 1), head(3, 8), Buffer.from('toString'), head(0, 1)]);
    expect(decodeUntrustedCbor(asMap, { maps: 'map' })).toEqual(new Map([['toString', 1]]));
  });

  it('a 24 KiB hello cannot declare a string longer than itself', () => {
    const hello = helloWith(Buffer.concat([head(2, 24 * 1024), Buffer.alloc(100)]));
    expect(() => decodeCbor(hello)).toThrow(/LENGTH/);
  });
});

describe('strict CBOR: what we write still decodes', () => {
  const wire = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false } as never);
  const scalar = fc.oneof(fc.integer(), fc.double({ noNaN: true }), fc.string(), fc.boolean(), fc.constant(null), fc.uint8Array({ maxLength: 64 }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }));
  const { value } = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small', maxDepth: 6 }, scalar, fc.array(tie('value'), { maxLength: 6 }), fc.dictionary(fc.string().filter((k) => !(k in Object.prototype)), tie('value'), { maxKeys: 6 })),
  }));

  // (Keys naming an Object.prototype member are refused on purpose, see above; no message of ours has one.)
  it('round-trips every value our encoder writes', () => {
    fc.assert(
      fc.property(value, (v) => {
        const bytes = wire.encode(v);
        expect(() => decodeCbor(bytes)).not.toThrow();
        expect(decodeUntrustedCbor(bytes, { maps: 'object' })).toEqual(wire.decode(bytes));
      }),
      { numRuns: 300 },
    );
  });

  it('decodes every real attestation document (tagged and untagged, indefinite maps)', () => {
    for (const f of loadFixtures()) expect(decodeAttestationDocument(f.bytes).pcrs.size).toBeGreaterThan(0);
  });
});
