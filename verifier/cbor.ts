// Strict CBOR decoding on top of cbor-x: one complete item (cbor-x refuses trailing bytes), maps as
// `Map`s, byte strings as views of the input (so the payload is verified exactly as received), and
// duplicate map keys refused at any depth. cbor-x keeps the last of duplicate keys silently; we detect
// them by counting the keys it reads (its `keyMap` hook calls `decodeKey` once per key read) and
// comparing with the entries the decoded maps hold.
import { Decoder, Tag } from 'cbor-x';
import { malformed } from './errors.ts';

/** Decoded items visited when counting map entries; a document is far below it. */
const walkNodesMax = 100_000;

class KeyCountingDecoder extends Decoder {
  keysRead = 0;

  constructor() {
    // A keyMap makes cbor-x route every map key through decodeKey; the empty map renames nothing.
    // The constructor then forces plain objects, so ask for Maps again afterwards.
    super({ useRecords: false, mapsAsObjects: false, keyMap: {} });
    (this as unknown as { mapsAsObjects: boolean }).mapsAsObjects = false;
  }

  decodeKey(key: unknown): unknown {
    this.keysRead += 1;
    return key;
  }
}

const decoder = new KeyCountingDecoder();

/** Decodes exactly one CBOR item filling `bytes`; throws MALFORMED on any defect. */
export function decodeStrict(bytes: Uint8Array, what: string): unknown {
  let value: unknown;
  let keysRead: number;
  try {
    decoder.keysRead = 0;
    value = decoder.decode(bytes);
    keysRead = decoder.keysRead;
  } catch (err) {
    throw malformed(`${what} is not well-formed CBOR: ${(err as Error)?.message ?? String(err)}`, err);
  }
  if (countMapEntries(value, what) !== keysRead) throw malformed(`${what} has a duplicate map key`);
  return value;
}

/** Sum of the sizes of all Maps reachable from `root`, each counted once (shared references exist). */
function countMapEntries(root: unknown, what: string): number {
  const seen = new Set<object>();
  const stack: unknown[] = [root];
  let entries = 0;
  let nodes = 0;
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value !== 'object' || value === null || seen.has(value)) continue;
    if (ArrayBuffer.isView(value)) continue;
    nodes += 1;
    if (nodes > walkNodesMax) throw malformed(`${what} has too many items`);
    seen.add(value);
    if (value instanceof Map) {
      entries += value.size;
      for (const [k, v] of value) stack.push(k, v);
    } else if (Array.isArray(value)) {
      for (const v of value) stack.push(v);
    } else if (value instanceof Tag) {
      stack.push(value.value);
    }
  }
  return entries;
}
