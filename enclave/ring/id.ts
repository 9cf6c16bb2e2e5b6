// 256-bit ring identifiers as bigint, and the interval arithmetic of Chord.
// Intervals are on a circle: (a, b) with a === b means "everything but a",
// which is what a one-node ring needs.
import { hash } from 'node:crypto';
import { idBits, idBytes } from './constants.ts';
import { RingError } from './errors.ts';

export const idSpace = 1n << BigInt(idBits);
export const idMask = idSpace - 1n;

/** 2^i for i in [0, idBits), precomputed: fingers and fix_fingers use them in hot loops. */
export const pow2: readonly bigint[] = Array.from({ length: idBits }, (_, i) => 1n << BigInt(i));

export function isId(x: unknown): x is bigint {
  return typeof x === 'bigint' && x >= 0n && x <= idMask;
}

/** Big-endian 32 bytes -> identifier. */
export function idFromBytes(b: Uint8Array): bigint {
  if (!(b instanceof Uint8Array) || b.length !== idBytes) {
    throw new RingError('BAD_ID', `identifier must be ${idBytes} bytes`);
  }
  return BigInt('0x' + Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex'));
}

/** Identifier -> big-endian 32 bytes (how the lead's codec carries it). */
export function idToBytes(id: bigint): Uint8Array {
  if (!isId(id)) throw new RingError('BAD_ID', 'identifier out of range');
  return Uint8Array.from(Buffer.from(id.toString(16).padStart(idBytes * 2, '0'), 'hex'));
}

function sha256Id(data: Uint8Array): bigint {
  return BigInt('0x' + hash('sha256', data, 'hex'));
}

/** A node's place on the ring: SHA-256 of its attested public key, so a host cannot choose it. */
export function nodeIdFromPublicKey(pub: Uint8Array): bigint {
  if (!(pub instanceof Uint8Array) || pub.length === 0) throw new RingError('MALFORMED', 'public key must be bytes');
  return sha256Id(pub);
}

/** A key's place on the ring: SHA-256 of the key bytes. */
export function keyId(key: Uint8Array): bigint {
  if (!(key instanceof Uint8Array)) throw new RingError('MALFORMED', 'key must be bytes');
  return sha256Id(key);
}

/** x in (a, b), clockwise. With a === b: every x except a. */
export function betweenOpen(x: bigint, a: bigint, b: bigint): boolean {
  if (a < b) return a < x && x < b;
  if (a > b) return x > a || x < b;
  return x !== a;
}

/** x in (a, b], clockwise. With a === b: the whole circle. */
export function betweenRightIncl(x: bigint, a: bigint, b: bigint): boolean {
  if (a < b) return a < x && x <= b;
  if (a > b) return x > a || x <= b;
  return true;
}

/** Clockwise distance from a to b, in [0, 2^256). */
export function distance(a: bigint, b: bigint): bigint {
  return (b - a) & idMask;
}

/** (a + 2^i) mod 2^256: the start of finger i of node a. */
export function fingerStart(a: bigint, i: number): bigint {
  return (a + (pow2[i] as bigint)) & idMask;
}

/** Largest i with 2^i <= d, for d >= 1 (binary search over pow2, no string conversion). */
export function floorLog2(d: bigint): number {
  if (d < 1n) throw new RangeError('floorLog2 of a non-positive value');
  let lo = 0;
  let hi = idBits - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((pow2[mid] as bigint) <= d) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Short hex for logs and tables. */
export function shortId(id: bigint): string {
  return id.toString(16).padStart(idBytes * 2, '0').slice(0, 8);
}
