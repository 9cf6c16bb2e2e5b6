// The request path's fast paths (issue 15) compute exactly what the slow ones did: a key's range without
// BigInt in the SDK, a log record's wire form copied only where it must change, the floor's hashes in one
// shot (a floor file written before keeps its meaning). Each property is checked against the plain formula.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { shardOfHash } from '../client/index.ts';
import { Floor, valueHash } from '../client/floor.ts';
import { encodeCbor } from '../protocol/cbor.ts';
import { toWire } from '../enclave/cluster/data-wire.ts';
import { idToBytes } from '../enclave/ring/index.ts';
import { computeDigest, shardOf } from '../enclave/data/node.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-reqpath-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const exactShard = (hex: string, shards: number): number => Number((BigInt('0x' + hex) * BigInt(shards)) >> 256n);

describe("the SDK's range of a key", () => {
  it('equals floor(h * shards / 2^256) for any hash and range count, near the carries too', () => {
    const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));
    const shards = fc.oneof(fc.constantFrom(1, 2, 3, 64, 1000, 65536), fc.integer({ min: 1, max: 65536 }));
    fc.assert(fc.property(hex64, shards, (hex, s) => shardOfHash(hex, s) === exactShard(hex, s)), { numRuns: 20_000 });
    // The top 32 bits chosen so that x mod 2^32 lands in the last `shards` values below 2^32 (the slow path).
    fc.assert(
      fc.property(hex64, shards, fc.nat(), (hex, s, pick) => {
        const q = pick % s;
        const top = Math.min(0xffffffff, Math.floor(((q + 1) * 0x1_0000_0000 - 1) / s));
        const near = top.toString(16).padStart(8, '0') + hex.slice(8);
        return shardOfHash(near, s) === exactShard(near, s);
      }),
      { numRuns: 20_000 },
    );
  });

  it("agrees with the enclave's shardOf on real keys", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.constantFrom(1, 7, 64, 256), (key, s) => {
        const hex = createHash('sha256').update(key).digest('hex');
        return shardOfHash(hex, s) === shardOf(Buffer.from(key).toString('latin1'), s);
      }),
      { numRuns: 2000 },
    );
  });
});

/** The wire form as it was computed before (a full copy): the reference the copy-on-write one must match. */
function referenceToWire(x: unknown): unknown {
  if (typeof x === 'bigint') return idToBytes(x);
  if (Array.isArray(x)) return x.map(referenceToWire);
  if (x !== null && typeof x === 'object' && !(x instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) if (v !== undefined) out[k] = referenceToWire(v);
    return out;
  }
  return x;
}

describe("a log record's wire form", () => {
  const leaf = fc.oneof(
    fc.integer(),
    fc.string({ maxLength: 8 }),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.uint8Array({ maxLength: 8 }),
    fc.bigInt({ min: 0n, max: (1n << 256n) - 1n }),
  );
  const tree = fc.letrec((tie) => ({
    node: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('node'), { maxLength: 4 }), fc.dictionary(fc.constantFrom('a', 'b', 'ring', 'v', 'key'), tie('node'), { maxKeys: 4 })),
  })).node;

  it('encodes to the same bytes as a full copy, and never changes its input', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string({ maxLength: 4 }), tree, { maxKeys: 6 }), (x) => {
        const before = encodeCbor(referenceToWire(x));
        const wire = toWire(x);
        expect(Buffer.compare(encodeCbor(wire), before)).toBe(0);
        // The input is left as it was: encoding it the reference way gives the same bytes again.
        expect(Buffer.compare(encodeCbor(referenceToWire(x)), before)).toBe(0);
      }),
      { numRuns: 3000 },
    );
  });

  it('returns a part with nothing to change as it is, and copies one with a bigint or an undefined', () => {
    const plain = { t: 'w', shard: 3, op: { key: Buffer.from('k'), req: { session: 1, seq: 2 } } };
    expect(toWire(plain)).toBe(plain);
    const withBig = { a: { ring: 5n }, b: { c: 1 } };
    const w = toWire(withBig) as { a: { ring: unknown }; b: unknown };
    expect(w).not.toBe(withBig);
    expect(w.a.ring).toBeInstanceOf(Uint8Array);
    expect(w.b).toBe(withBig.b);
    expect(withBig.a.ring).toBe(5n);
    expect(Object.keys(toWire({ a: 1, b: undefined }) as object)).toEqual(['a']);
  });
});

describe("the floor's hashes", () => {
  it('are the SHA-256 prefixes a floor file already holds (files written before keep their meaning)', () => {
    const file = join(dir, 'floor.json');
    const f = new Floor({ file });
    const key = Buffer.from('some key');
    const value = Buffer.from('some value');
    f.checkWrite('none', key, f.snapshot(key), 3, value);
    f.save();
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { keys: Array<[string, string, number, string]> };
    const kh = createHash('sha256').update(key).digest().subarray(0, 16).toString('hex');
    const vh = createHash('sha256').update(value).digest().subarray(0, 8).toString('hex');
    expect(saved.keys).toEqual([['none', kh, 3, vh]]);
    expect(valueHash(value)).toBe(vh);
    // Read back from the file: the same key is at version 3, so version 2 is stale.
    const g = new Floor({ file });
    expect(() => g.checkRead('none', key, g.snapshot(key), 2, value)).toThrow(/version 3/);
  });
});

describe("a write request's digest (the exactly-once table's check of a retry)", () => {
  // The form it had when session tables were first sealed: streaming SHA-256 over the same fields.
  const reference = (op: { kind: 'put' | 'del'; key: string; value?: string; ifVersion: number | null; ttl?: number }): string => {
    const h = createHash('sha256');
    h.update(`${op.kind}\0${op.ifVersion ?? -1}\0${op.key.length}\0`);
    h.update(Buffer.from(op.key, 'latin1'));
    if (op.kind === 'put') h.update(createHash('sha256').update(Buffer.from(op.value ?? '', 'latin1')).digest());
    if (op.kind === 'put' && op.ttl) h.update(`\0ttl${op.ttl}`);
    return h.digest('hex').slice(0, 32);
  };
  const latin1 = fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('latin1'));
  it('is the same bytes as the streaming form, for puts (with and without ttl) and deletes', () => {
    fc.assert(fc.property(fc.boolean(), latin1, latin1, fc.option(fc.nat(1e9)), fc.option(fc.integer({ min: 1, max: 2 ** 40 }), { nil: undefined }), (put, key, value, ifVersion, ttl) => {
      const op = put
        ? { kind: 'put' as const, key, value, ifVersion, session: 1, seq: 1, floor: 1, principal: 'p', ...(ttl === undefined ? {} : { ttl }) }
        : { kind: 'del' as const, key, ifVersion, session: 1, seq: 1, floor: 1, principal: 'p' };
      expect(computeDigest(op as never)).toBe(reference(op));
    }), { numRuns: 500 });
  });
});
