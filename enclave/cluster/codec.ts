/**
 * Ring messages on the wire: the core's plain objects, with every bigint
 * identifier carried as a 32-byte big-endian byte string (validateRingMessage
 * turns them back into bigints).
 */
import { idToBytes } from '../ring/index.ts';

export function encodeRingValue(x: unknown): unknown {
  if (typeof x === 'bigint') return idToBytes(x);
  if (Array.isArray(x)) return x.map(encodeRingValue);
  if (x !== null && typeof x === 'object' && !(x instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) out[k] = encodeRingValue(v);
    return out;
  }
  return x;
}
