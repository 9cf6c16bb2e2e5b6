/**
 * The project's CBOR codec settings (cbor-x), in one place: plain maps as
 * objects, no record extension, so every message is standard CBOR.
 */
import { Decoder, Encoder } from 'cbor-x';
import { EkvError } from './errors.ts';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false } as never);
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true } as never);

export function encodeCbor(value: unknown): Buffer {
  return encoder.encode(value);
}

/** Decode one CBOR item; anything malformed becomes PROTOCOL. */
export function decodeCbor(bytes: Uint8Array): unknown {
  try {
    return decoder.decode(bytes);
  } catch (err) {
    throw new EkvError('PROTOCOL', `malformed CBOR: ${(err as Error).message}`);
  }
}

export function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array);
}

export function bytesField(obj: Record<string, unknown>, name: string, min: number, max: number): Buffer {
  const v = obj[name];
  if (!(v instanceof Uint8Array)) throw new EkvError('PROTOCOL', `field ${name}: expected bytes`);
  if (v.length < min || v.length > max) throw new EkvError('PROTOCOL', `field ${name}: ${v.length} bytes, expected ${min}..${max}`);
  return Buffer.from(v.buffer, v.byteOffset, v.length);
}

export function optionalBytesField(obj: Record<string, unknown>, name: string, min: number, max: number): Buffer | null {
  const v = obj[name];
  if (v === undefined || v === null) return null;
  return bytesField(obj, name, min, max);
}
