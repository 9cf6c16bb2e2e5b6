// CBOR decoding for attestation documents: one complete item, maps as `Map`s, byte strings as views
// of the input (so the payload is verified exactly as received), duplicate map keys refused at any
// depth. The decoding itself, with its limits, is verifier/strict-cbor.ts; this file fixes what a
// Nitro document may contain: indefinite lengths (the NSM sends an indefinite payload map), at most
// COSE_Sign1's tag 18 on the outermost item, and nothing else.
import { malformed } from './errors.ts';
import { CborRefused, decodeUntrustedCbor } from './strict-cbor.ts';

/** Nesting a document needs: the payload map holds the pcrs map and the cabundle array. */
const documentDepthMax = 8;
/** Items in one document; a genuine one holds about a hundred. */
const documentItemsMax = 4096;
const coseSign1Tag = 18;

/** Decodes exactly one CBOR item filling `bytes`; throws MALFORMED on any defect. */
export function decodeStrict(bytes: Uint8Array, what: string, allowCoseTag = false): unknown {
  try {
    return decodeUntrustedCbor(bytes, {
      maps: 'map',
      depthMax: documentDepthMax,
      itemsMax: documentItemsMax,
      indefinite: true,
      ...(allowCoseTag ? { outerTag: coseSign1Tag } : {}),
    });
  } catch (err) {
    if (err instanceof CborRefused && err.reason === 'DUPLICATE_KEY') throw malformed(`${what} has a duplicate map key`, err);
    throw malformed(`${what} is not well-formed CBOR: ${(err as Error)?.message ?? String(err)}`, err);
  }
}
