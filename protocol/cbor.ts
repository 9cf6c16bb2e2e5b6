/**
 * The project's CBOR codec settings, in one place: plain maps as objects, no
 * record extension, so every message is standard CBOR. Decoding goes through
 * the strict decoder of verifier/strict-cbor.ts (no tags, no bignums, no
 * indefinite lengths, bounded depth and item count, no duplicate keys).
 */
import { Encoder } from 'cbor-x';
import { CborRefused, decodeUntrustedCbor } from '../verifier/strict-cbor.ts';
import { EkvError } from './errors.ts';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false } as never);

/** Items one protocol message may carry: a replica batch of 4096 entries is about 25,000. */
export const messageItemsMax = 1 << 16;
/** Nesting one protocol message may have (an RPC batch of requests of entries is about 5). */
export const messageDepthMax = 16;

export function encodeCbor(value: unknown): Buffer {
  return encoder.encode(value);
}

/**
 * Decode one CBOR item of our own protocol; anything malformed or outside the
 * limits becomes PROTOCOL. `itemsMax` may be raised for our own sealed state
 * (a snapshot holds every entry), never for what arrives on a socket.
 */
export function decodeCbor(bytes: Uint8Array, itemsMax: number = messageItemsMax): unknown {
  try {
    return decodeUntrustedCbor(bytes, { maps: 'object', depthMax: messageDepthMax, itemsMax });
  } catch (err) {
    const reason = err instanceof CborRefused ? `${err.reason}: ${err.message}` : String(err);
    throw new EkvError('PROTOCOL', `malformed CBOR: ${reason}`);
  }
}

export function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

export function bytesField(obj: Record<string, unknown>, name: string, min: number, max: number): Buffer {
  const v = Object.hasOwn(obj, name) ? obj[name] : undefined;
  if (!(v instanceof Uint8Array)) throw new EkvError('PROTOCOL', `field ${name}: expected bytes`);
  if (v.length < min || v.length > max) throw new EkvError('PROTOCOL', `field ${name}: ${v.length} bytes, expected ${min}..${max}`);
  return Buffer.from(v.buffer, v.byteOffset, v.length);
}

export function optionalBytesField(obj: Record<string, unknown>, name: string, min: number, max: number): Buffer | null {
  const v = Object.hasOwn(obj, name) ? obj[name] : undefined;
  if (v === undefined || v === null) return null;
  return bytesField(obj, name, min, max);
}
