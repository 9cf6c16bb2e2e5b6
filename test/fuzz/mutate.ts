// Structure-aware mutation of real inputs. An input is one of four layouts:
//   cbor    one CBOR item: decoded (permissively, with cbor-x: this is test tooling), one node
//           changed (a value of another type, a boundary integer, a longer or empty string, a key
//           added or removed, a nested CBOR byte string mutated in turn, a hostile shape spliced in
//           as raw bytes), re-encoded; sometimes bytes are then flipped, cut or duplicated;
//   frames  length-prefixed frames whose bodies are CBOR: one body mutated as above, or a header lied in;
//   json    a JSON object: a value or key changed, prototype names, deep nesting, huge numbers;
//   bytes   anything else (BER, sealed binary formats): byte flips, cuts, splices, length fields.
// Everything is drawn from a seeded PRNG, so (seed, index) regenerates an input exactly.
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../../verifier/strict-cbor.ts';
import { encodeFrame } from '../../protocol/frame.ts';
import { bignum, deepArrays, head, hugeDeclared, indefiniteMap, packedTableBomb } from '../helpers/hostile-cbor.ts';

export type Layout = 'cbor' | 'frames' | 'json' | 'bytes';

/** xorshift128+, seeded; enough for mutation choices. */
export class Rng {
  private a: bigint;
  private b: bigint;
  constructor(seed: number) {
    this.a = BigInt(seed >>> 0) * 0x9e3779b97f4a7c15n + 1n;
    this.b = BigInt((seed / 2 ** 32) >>> 0) ^ 0x5851f42d4c957f2dn;
    for (let i = 0; i < 8; i++) this.u32();
  }
  u32(): number {
    const mask = (1n << 64n) - 1n;
    let s1 = this.a;
    const s0 = this.b;
    this.a = s0;
    s1 ^= (s1 << 23n) & mask;
    this.b = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return Number(((this.b + s0) & mask) >> 32n);
  }
  int(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }
}

// The mutator decodes its own (possibly already hostile) inputs, so it uses the strict decoder too,
// as loosely as it allows: a plain cbor-x decode here would expand the very bombs it plants.
const looseMaps = {
  decode: (b: Uint8Array): unknown => decodeUntrustedCbor(b, { maps: 'map', indefinite: true, outerTag: 18, depthMax: 64, itemsMax: 1 << 20 }),
};
const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false } as never);

/** Hostile CBOR items, as raw bytes, to splice in place of any value. */
export function hostileItems(): Buffer[] {
  return [
    packedTableBomb(26),
    packedTableBomb(30),
    bignum(24 * 1024),
    bignum(128 * 1024),
    bignum(256 * 1024, true),
    deepArrays(5000),
    deepArrays(5000, true),
    hugeDeclared(4, 0xffffffff),
    hugeDeclared(5, 2 ** 40),
    hugeDeclared(2, 2 ** 31),
    hugeDeclared(3, 2 ** 53),
    indefiniteMap(),
    Buffer.concat([head(6, 28), head(4, 1), head(6, 29), head(0, 0)]),
    Buffer.concat([head(6, 105), head(4, 0)]),
    Buffer.concat([head(6, 18), head(4, 0)]),
    Buffer.concat([head(6, 1), head(0, 0)]),
    Buffer.from([0xf8, 0x20]),
    Buffer.from([0x5f, 0x41, 0x00, 0xff]),
    Buffer.concat([head(4, 60_000), Buffer.alloc(60_000, 0x00)]),
  ];
}

const boundaryInts = [0, -1, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 32, -(2 ** 31), Number.MAX_SAFE_INTEGER, 2 ** 63, -(2 ** 63)];
const protoNames = ['__proto__', 'constructor', 'toString', 'prototype', 'hasOwnProperty', 'valueOf'];

function randomValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 7 : 9)) {
    case 0: return rng.pick(boundaryInts);
    case 1: return rng.pick([true, false, null, undefined, 1.5, -0, Number.NaN, Infinity]);
    case 2: return 'x'.repeat(rng.pick([0, 1, 31, 32, 33, 64, 1000, 30_000]));
    case 3: return Buffer.alloc(rng.pick([0, 1, 16, 31, 32, 33, 64, 65, 96, 97, 1000, 20_000, 70_000]), rng.int(256));
    case 4: return rng.pick(protoNames);
    case 5: return BigInt(rng.pick(boundaryInts.filter(Number.isSafeInteger)));
    case 6: return 2n ** 64n - 1n;
    case 7: return Array.from({ length: rng.int(5) }, () => randomValue(rng, depth + 1));
    default: return new Map(Array.from({ length: rng.int(4) }, () => [rng.chance(0.7) ? rng.pick(protoNames.concat(['t', 'v', 'id', 'k', 'x'])) : rng.int(40), randomValue(rng, depth + 1)]));
  }
}

/** Paths to every node of a decoded value (arrays and Maps), root first. */
function nodes(root: unknown): Array<{ parent: unknown; key: unknown; value: unknown }> {
  const out: Array<{ parent: unknown; key: unknown; value: unknown }> = [{ parent: null, key: null, value: root }];
  for (let i = 0; i < out.length && out.length < 5000; i++) {
    const v = (out[i] as { value: unknown }).value;
    if (Array.isArray(v)) v.forEach((x, k) => out.push({ parent: v, key: k, value: x }));
    else if (v instanceof Map) for (const [k, x] of v) out.push({ parent: v, key: k, value: x });
  }
  return out;
}

function setNode(parent: unknown, key: unknown, value: unknown): void {
  if (Array.isArray(parent)) parent[key as number] = value;
  else if (parent instanceof Map) parent.set(key, value);
}

/** One CBOR-aware mutation; falls back to bytes when the seed does not decode. */
export function mutateCbor(rng: Rng, bytes: Buffer): Buffer {
  let root: unknown;
  try {
    root = looseMaps.decode(bytes);
  } catch {
    return mutateBytes(rng, bytes);
  }
  const all = nodes(root);
  const target = rng.pick(all);
  const marker = Buffer.from(`\u0000fuzz-marker-${rng.u32()}\u0000`);
  let splice: Buffer | null = null;
  const replace = (v: unknown) => {
    if (target.parent === null) root = v;
    else setNode(target.parent, target.key, v);
  };
  switch (rng.int(8)) {
    case 0: replace(randomValue(rng)); break;
    case 1: // a hostile shape, spliced raw where this value was
      splice = rng.pick(hostileItems());
      replace(marker);
      break;
    case 2: // a nested CBOR byte string (a core, a body, a document payload): mutate inside it
      if (target.value instanceof Uint8Array && target.value.length > 0) replace(mutateCbor(rng, Buffer.from(target.value)));
      else replace(randomValue(rng));
      break;
    case 3: // add or drop a key
      if (target.value instanceof Map) {
        const keys = [...target.value.keys()];
        if (keys.length > 0 && rng.chance(0.5)) target.value.delete(rng.pick(keys));
        else target.value.set(rng.pick(protoNames.concat(['t', 'extra', String(rng.int(99))])), randomValue(rng));
      } else if (Array.isArray(target.value)) {
        if (target.value.length > 0 && rng.chance(0.5)) target.value.splice(rng.int(target.value.length), 1);
        else target.value.push(randomValue(rng));
      } else replace(randomValue(rng));
      break;
    case 4: // same type, other size
      if (target.value instanceof Uint8Array) replace(Buffer.alloc(rng.pick([0, target.value.length - 1, target.value.length + 1, target.value.length * 4]), 0x41));
      else if (typeof target.value === 'string') replace(target.value + target.value.repeat(rng.int(4)));
      else if (typeof target.value === 'number' || typeof target.value === 'bigint') replace(rng.pick(boundaryInts));
      else replace(randomValue(rng));
      break;
    case 5: // duplicate a map key as raw CBOR: encode, then append a repeated pair is hard; swap the value type instead
      replace(Array.isArray(target.value) ? new Map(target.value.map((v, i) => [i, v])) : [target.value]);
      break;
    default: {
      // Swap two nodes' values.
      const other = rng.pick(all);
      if (other !== target && other.parent !== null && !isAncestor(target.value, other.value)) replace(other.value);
      else replace(randomValue(rng));
    }
  }
  let out: Buffer;
  try {
    out = Buffer.from(encoder.encode(root));
  } catch {
    return mutateBytes(rng, bytes);
  }
  if (splice) {
    const encodedMarker = Buffer.concat([head(2, marker.length), marker]);
    const at = out.indexOf(encodedMarker);
    if (at >= 0) out = Buffer.concat([out.subarray(0, at), splice, out.subarray(at + encodedMarker.length)]);
  }
  return rng.chance(0.15) ? mutateBytes(rng, out) : out;
}

function isAncestor(a: unknown, b: unknown): boolean {
  return nodes(a).some((n) => n.value === b);
}

/** Byte-level mutations, including the length fields of binary formats. */
export function mutateBytes(rng: Rng, bytes: Buffer): Buffer {
  const b = Buffer.from(bytes);
  if (b.length === 0) return Buffer.from([rng.int(256)]);
  switch (rng.int(8)) {
    case 0: {
      for (let i = 1 + rng.int(4); i > 0; i--) {
        const at = rng.int(b.length);
        b[at] = (b[at] as number) ^ (1 << rng.int(8));
      }
      return b;
    }
    case 1: return b.subarray(0, rng.int(b.length));
    case 2: return b.subarray(rng.int(b.length));
    case 3: {
      const at = rng.int(b.length);
      const len = rng.int(Math.min(256, b.length - at)) + 1;
      return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
    }
    case 4: { // a 32-bit length field, lied in
      const at = rng.int(Math.max(1, b.length - 3));
      if (b.length >= 4) b.writeUInt32BE(rng.pick([0, 1, 0x7fffffff, 0xffffffff, b.length, b.length + 1, 16 * 1024 * 1024]) >>> 0, Math.min(at, b.length - 4));
      return b;
    }
    case 5: b[rng.int(b.length)] = rng.pick([0x00, 0xff, 0x80, 0x7f, 0x9f, 0xbf, 0x5f, 0x7f, 0xd8, 0xc2, 0x1b, 0x3b, 0x9b, 0xbb]); return b;
    case 6: return Buffer.concat([b, Buffer.alloc(rng.int(64), rng.int(256))]);
    default: {
      const at = rng.int(b.length);
      return Buffer.concat([b.subarray(0, at), rng.pick(hostileItems()).subarray(0, 4096), b.subarray(at)]);
    }
  }
}

/** Splits length-prefixed frames; null when the bytes are not a whole number of frames. */
export function splitFrames(bytes: Buffer): Buffer[] | null {
  const out: Buffer[] = [];
  let off = 0;
  while (off + 4 <= bytes.length) {
    const len = bytes.readUInt32BE(off);
    if (off + 4 + len > bytes.length) return null;
    out.push(bytes.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return off === bytes.length ? out : null;
}

export function mutateFrames(rng: Rng, bytes: Buffer): Buffer {
  const frames = splitFrames(bytes);
  if (!frames || frames.length === 0 || rng.chance(0.1)) return mutateBytes(rng, bytes);
  const i = rng.int(frames.length);
  frames[i] = mutateCbor(rng, frames[i] as Buffer);
  if (rng.chance(0.05)) frames.push(Buffer.alloc(rng.pick([30 * 1024, 600 * 1024])));
  return Buffer.concat(frames.map((f) => encodeFrame(f)));
}

export function mutateJson(rng: Rng, bytes: Buffer): Buffer {
  let root: unknown;
  try {
    root = JSON.parse(bytes.toString('utf8'));
  } catch {
    return mutateBytes(rng, bytes);
  }
  if (root === null || typeof root !== 'object' || rng.chance(0.1)) return mutateBytes(rng, bytes);
  const obj = root as Record<string, unknown>;
  const keys = Object.keys(obj);
  const jsonValue = (): unknown => rng.pick<unknown>([null, true, 0, -1, 1e308, 12345678901234567890, 'x'.repeat(rng.pick([0, 100, 5000])), [], {}, [1, [2, [3]]], { a: { b: {} } }]);
  switch (rng.int(5)) {
    case 0: if (keys.length > 0) obj[rng.pick(keys)] = jsonValue(); break;
    case 1: if (keys.length > 0) delete obj[rng.pick(keys)]; break;
    case 2: {
      // A prototype name as an own key: JSON.parse keeps "__proto__" as data.
      const text = JSON.stringify(obj).replace(/^\{/, `{"${rng.pick(protoNames)}": ${JSON.stringify(jsonValue())}${keys.length ? ',' : ''}`);
      return Buffer.from(text);
    }
    case 3: return Buffer.from('['.repeat(5000) + ']'.repeat(5000));
    default: {
      const k = keys.length > 0 ? rng.pick(keys) : 'x';
      const v = obj[k];
      if (v !== null && typeof v === 'object') (v as Record<string, unknown>)[rng.pick(protoNames.concat(['extra']))] = jsonValue();
      else obj[k] = { nested: v };
    }
  }
  try {
    return Buffer.from(JSON.stringify(obj));
  } catch {
    return mutateBytes(rng, bytes);
  }
}

export function mutate(rng: Rng, layout: Layout, seed: Buffer): Buffer {
  // Stack a few mutations now and then.
  let out = seed;
  for (let n = rng.chance(0.2) ? 2 + rng.int(3) : 1; n > 0; n--) {
    try {
      out =
        layout === 'cbor' ? mutateCbor(rng, out) :
        layout === 'frames' ? mutateFrames(rng, out) :
        layout === 'json' ? mutateJson(rng, out) :
        mutateBytes(rng, out);
    } catch {
      out = mutateBytes(rng, out); // the mutator's own limits (a JSON nested past the stack): plain bytes
    }
  }
  return out;
}

/** The dangerous shapes by hand: each hostile item alone, and spliced in place of every top-level value of each seed. */
export function handInputs(layout: Layout, seeds: Buffer[]): Buffer[] {
  const hostile = hostileItems();
  if (layout === 'json') {
    return [
      Buffer.from('['.repeat(100_000)),
      Buffer.from('{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000)),
      ...protoNames.map((p) => Buffer.from(`{"${p}": "x"}`)),
      Buffer.from(`{"x": "${'\\u0000'.repeat(1000)}"}`),
      Buffer.from('1'.repeat(4000)),
    ];
  }
  if (layout === 'bytes') return [...hostile, ...seeds.map((s) => Buffer.concat([s, s])), Buffer.alloc(0), Buffer.alloc(1 << 20, 0xff)];
  const out: Buffer[] = [];
  for (const seed of seeds.slice(0, 4)) {
    const bodies = layout === 'frames' ? (splitFrames(seed) ?? [seed]) : [seed];
    for (let f = 0; f < bodies.length; f++) {
      let root: unknown;
      try {
        root = looseMaps.decode(bodies[f] as Buffer);
      } catch {
        continue;
      }
      const slots = nodes(root).filter((n) => n.parent !== null && n.parent === root).slice(0, 6);
      for (const slot of slots) {
        for (const h of hostile) {
          const marker = Buffer.from('\u0000hand-marker\u0000');
          setNode(slot.parent, slot.key, marker);
          const enc = Buffer.from(encoder.encode(root));
          setNode(slot.parent, slot.key, slot.value);
          const m = Buffer.concat([head(2, marker.length), marker]);
          const at = enc.indexOf(m);
          const body = Buffer.concat([enc.subarray(0, at), h, enc.subarray(at + m.length)]);
          if (layout === 'cbor') out.push(body);
          else out.push(Buffer.concat((bodies.map((b, i) => encodeFrame(i === f ? body : b)))));
        }
      }
    }
  }
  for (const h of hostile) out.push(layout === 'frames' ? encodeFrame(h) : h);
  return out;
}
