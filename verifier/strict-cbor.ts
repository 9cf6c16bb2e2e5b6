// The one decoder of untrusted CBOR in enclave-kv. Every byte that reaches a CBOR decode from outside
// the enclave's own memory (a hello, a sealed frame, an attestation document, an ACL document, the
// host's blob answers and disk, the NSM's answer) goes through `decodeUntrustedCbor`; a test
// (test/cbor-owner.test.ts) checks that no other production file imports a CBOR decoder.
//
// How: a linear pre-scan walks the item headers without allocating anything and refuses, before any
// decoder sees the bytes,
//   - every tag, except one outermost tag a format names (COSE_Sign1's 18 for attestation
//     documents); this refuses cbor-x's extension tags (packed tables 51/225, records, shared
//     references), which cbor-x honours whatever options it is given (one 811-byte hello built
//     from tags 51 and 225 doubled an array at each level and exhausted a 512 MB heap), and the
//     bignums (tags 2/3), which cbor-x builds one byte at a time (quadratic time);
//   - nesting deeper than `depthMax` and more than `itemsMax` items;
//   - any declared length that cannot fit in the bytes that remain (a string of n bytes needs n
//     bytes, an array of n items at least n, a map of n pairs at least 2n), so no allocation is
//     larger than the input;
//   - indefinite lengths unless the format has them (Nitro's NSM sends an indefinite payload map),
//     simple values other than false/true/null/undefined, reserved encodings, trailing bytes;
//   - with `maps: 'object'`, map keys that are not text strings, and (after decoding) keys that name
//     an Object.prototype member (a `toString` key made String(message) throw; found by the fuzzer).
// Only then does cbor-x decode (with records off), and the decoded maps must hold as many entries as
// the scan counted pairs: fewer means a duplicate key, which cbor-x would otherwise resolve silently.
//
// Why cbor-x behind a guard rather than cborg 6.1.5 (measured with `npm run bench:cbor`, two runs on the
// shared 2-core machine): on small messages the two are within a few microseconds (strict/cborg
// throughput 0.3-1.5 on a hello, a handshake answer, a batch of 64 gets, a replica batch; 1.3-7x on an
// attestation document), but cborg copies every byte string, so a 512 KiB put decodes 35-65x faster
// here (views of the input, as before). cbor-x also keeps the decoded forms every caller relies on
// (bigint for 8-byte integers, Maps or plain objects). And cborg would need a guard anyway: it decodes
// recursively with no depth bound (deep nesting ends in a stack overflow) and has no item bound.
//
// The cost of refusing is the scan: linear in the input, a few microseconds per KiB (bench:cbor).
import { Decoder } from 'cbor-x';

export type CborRefusal =
  | 'EMPTY'
  | 'TRUNCATED'
  | 'RESERVED'
  | 'TAG'
  | 'INDEFINITE'
  | 'SIMPLE'
  | 'LENGTH'
  | 'DEPTH'
  | 'ITEMS'
  | 'KEY'
  | 'TRAILING'
  | 'DUPLICATE_KEY'
  | 'DECODE';

/** Why untrusted CBOR was refused; each decode site turns it into its own typed error. */
export class CborRefused extends Error {
  readonly reason: CborRefusal;

  constructor(reason: CborRefusal, message: string, options?: { cause?: unknown }) {
    // No stack trace: refusing must stay cheap (capturing one costs more than scanning kilobytes), and
    // each decode site wraps this in its own typed error, which has one.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message, options);
    Error.stackTraceLimit = limit;
    this.name = 'CborRefused';
    this.reason = reason;
  }
}

export interface UntrustedCborOptions {
  /** 'map' gives Maps (any scalar key); 'object' gives plain objects (text keys only). */
  maps: 'map' | 'object';
  /** Nesting depth allowed (the top-level item is depth 0). */
  depthMax?: number;
  /** Data items allowed in total (every scalar, string, array, map, key and value counts one). */
  itemsMax?: number;
  /** Whether indefinite-length strings, arrays and maps are allowed. */
  indefinite?: boolean;
  /** The one tag allowed, and only on the outermost item (COSE_Sign1: 18). */
  outerTag?: number;
}

export const cborDepthMaxDefault = 16;
export const cborItemsMaxDefault = 1 << 16;

const mapDecoder = new Decoder({ useRecords: false, mapsAsObjects: false } as never);
const objectDecoder = new Decoder({ useRecords: false, mapsAsObjects: true } as never);

/** Decodes exactly one CBOR item filling `bytes`, or throws CborRefused. */
export function decodeUntrustedCbor(bytes: Uint8Array, options: UntrustedCborOptions): unknown {
  const pairs = scanCbor(bytes, options);
  let value: unknown;
  try {
    value = (options.maps === 'map' ? mapDecoder : objectDecoder).decode(bytes);
  } catch (err) {
    throw new CborRefused('DECODE', `not well-formed CBOR: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
  if (pairs > 0 && countMapEntries(value) !== pairs) throw new CborRefused('DUPLICATE_KEY', 'a map has a duplicate key');
  return value;
}

/** The deepest nesting any caller may ask for; the scan's stacks are this deep. */
export const scanDepthLimit = 64;
const scanRemaining = new Int32Array(scanDepthLimit + 1);
const scanKind = new Uint8Array(scanDepthLimit + 1);
const scanSeen = new Int32Array(scanDepthLimit + 1);

// Container kinds on the scan stack; the two chunked-string kinds equal the major type of their chunks.
const kindArray = 0;
const kindMap = 1;
const kindBytesChunks = 2;
const kindTextChunks = 3;
const kindTag = 4;

/**
 * Walks the item headers of `bytes` and returns the number of map pairs; throws CborRefused on
 * anything the options do not allow. No recursion and no allocation: three fixed stacks.
 */
export function scanCbor(bytes: Uint8Array, options: UntrustedCborOptions): number {
  const depthMax = options.depthMax ?? cborDepthMaxDefault;
  const itemsMax = options.itemsMax ?? cborItemsMaxDefault;
  const indefinite = options.indefinite ?? false;
  const objectKeys = options.maps === 'object';
  const end = bytes.length;
  if (end === 0) throw new CborRefused('EMPTY', 'no CBOR item');
  if (depthMax > scanDepthLimit || end > 0x7fffffff) throw new RangeError('scanCbor: depthMax or input size beyond the scanner');
  // remaining[d]: items still expected in the container at depth d (-1: indefinite, ends at a break).
  // The stacks are shared: the scan is synchronous and calls nothing that could re-enter it.
  const remaining = scanRemaining;
  const kind = scanKind;
  const seen = scanSeen;
  let depth = 0; // containers open
  let pos = 0;
  let items = 0;
  let pairs = 0;
  for (;;) {
    if (pos >= end) throw new CborRefused('TRUNCATED', 'the input ends inside an item');
    const start = pos;
    const ib = bytes[pos++] as number;
    const open = depth > 0 ? (kind[depth - 1] as number) : -1;
    if (ib === 0xff) {
      if (depth === 0 || remaining[depth - 1] !== -1) throw new CborRefused('RESERVED', 'a break outside an indefinite-length item');
      if (open === kindMap) {
        if ((seen[depth - 1] as number) % 2 !== 0) throw new CborRefused('LENGTH', 'an indefinite map ends after a key');
        pairs += (seen[depth - 1] as number) / 2;
      }
      depth--;
    } else {
      const major = ib >> 5;
      const ai = ib & 0x1f;
      if (++items > itemsMax) throw new CborRefused('ITEMS', `more than ${itemsMax} items`);
      if (open === kindBytesChunks || open === kindTextChunks) {
        if (major !== open || ai === 31) throw new CborRefused('RESERVED', 'a chunk of an indefinite string is not a definite string of its type');
      }
      if (objectKeys && open === kindMap && (seen[depth - 1] as number) % 2 === 0 && major !== 3) {
        throw new CborRefused('KEY', 'a map key is not a text string');
      }
      if (depth > 0) seen[depth - 1] = (seen[depth - 1] as number) + 1;
      let arg = ai;
      if (ai >= 24 && ai <= 27) {
        const size = 1 << (ai - 24);
        if (end - pos < size) throw new CborRefused('TRUNCATED', 'the input ends inside a header');
        arg = readArgument(bytes, pos, size);
        pos += size;
      } else if (ai >= 28 && ai <= 30) {
        throw new CborRefused('RESERVED', `reserved additional information ${ai}`);
      }
      const left = end - pos;
      let push = -2; // -2: nothing opened; otherwise the new container's item count (-1 indefinite)
      let pushKind = kindArray;
      switch (major) {
        case 0:
        case 1:
          if (ai === 31) throw new CborRefused('RESERVED', 'an integer with indefinite length');
          break;
        case 2:
        case 3:
          if (ai === 31) {
            if (!indefinite) throw new CborRefused('INDEFINITE', 'an indefinite-length string');
            push = -1;
            pushKind = major === 2 ? kindBytesChunks : kindTextChunks;
          } else {
            if (arg > left) throw new CborRefused('LENGTH', `a string of ${arg} bytes with ${left} bytes left`);
            pos += arg;
          }
          break;
        case 4:
        case 5:
          pushKind = major === 4 ? kindArray : kindMap;
          if (ai === 31) {
            if (!indefinite) throw new CborRefused('INDEFINITE', 'an indefinite-length array or map');
            push = -1;
          } else {
            const count = major === 4 ? arg : arg * 2;
            if (count > left) throw new CborRefused('LENGTH', `${count} items declared with ${left} bytes left`);
            if (major === 5) pairs += arg;
            if (count > 0) push = count;
          }
          break;
        case 6:
          if (ai === 31) throw new CborRefused('RESERVED', 'a tag with indefinite length');
          if (options.outerTag === undefined || arg !== options.outerTag || start !== 0) {
            throw new CborRefused('TAG', `tag ${arg} is not allowed here`);
          }
          push = 1;
          pushKind = kindTag;
          break;
        default: // 7
          if (ai === 31) throw new CborRefused('RESERVED', 'a break outside an indefinite-length item');
          if (ai < 20 || ai === 24) throw new CborRefused('SIMPLE', `simple value ${arg}`);
          break;
      }
      if (push !== -2) {
        if (depth >= depthMax) throw new CborRefused('DEPTH', `nesting deeper than ${depthMax}`);
        remaining[depth] = push;
        kind[depth] = pushKind;
        seen[depth] = 0;
        depth++;
        continue;
      }
    }
    // One item is complete: close every definite container it completes.
    while (depth > 0 && remaining[depth - 1] !== -1) {
      remaining[depth - 1] = (remaining[depth - 1] as number) - 1;
      if ((remaining[depth - 1] as number) > 0) break;
      depth--;
    }
    if (depth === 0) break;
  }
  if (pos !== end) throw new CborRefused('TRAILING', `${end - pos} bytes after the item`);
  return pairs;
}

/** A header argument of 1, 2, 4 or 8 bytes; 8-byte values beyond 2^53 lose precision but only compare as "too large". */
function readArgument(bytes: Uint8Array, pos: number, size: number): number {
  let n = 0;
  for (let i = 0; i < size; i++) n = n * 256 + (bytes[pos + i] as number);
  return n;
}

/**
 * Entries held by the decoded maps (Maps or plain objects). The scan bounded the items, and with
 * every tag but one refused cbor-x builds no shared references, so a plain walk is linear.
 */
function countMapEntries(root: unknown): number {
  const stack: unknown[] = [root];
  let entries = 0;
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value !== 'object' || value === null || ArrayBuffer.isView(value)) continue;
    if (value instanceof Map) {
      entries += value.size;
      for (const [k, v] of value) stack.push(k, v);
    } else if (Array.isArray(value)) {
      for (const v of value) stack.push(v);
    } else if ('tag' in value && 'value' in value && Object.getPrototypeOf(value) !== Object.prototype) {
      stack.push((value as { value: unknown }).value); // cbor-x's Tag (the one outer tag allowed)
    } else {
      const keys = Object.keys(value);
      entries += keys.length;
      for (const k of keys) {
        // A key named after an Object.prototype member (toString, valueOf, constructor...) would shadow it:
        // String(x) on such an object throws an untyped TypeError. None of our formats has one.
        if (k in Object.prototype) throw new CborRefused('KEY', `a map key names an Object member (${k.slice(0, 20)})`);
        stack.push((value as Record<string, unknown>)[k]);
      }
    }
  }
  return entries;
}
