// Serves the emulated NSM over a byte stream (the enclave's fd 3): u32-BE
// length-prefixed CBOR requests shaped as the Nitro NSM API, answered in
// order. Only `Attestation` is implemented; every other NSM operation gets
// `InvalidOperation`, unparseable requests `InvalidArgument`, requests over
// the driver's 0x1000-byte buffer `InputTooLarge`.
import assert from 'node:assert/strict';
import type { Duplex } from 'node:stream';
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../verifier/strict-cbor.ts';
import { FrameReader, frame } from './frames.ts';
import { EmulatedNsmError, type AttestRequest, type EmulatedNsm, type NsmErrorName } from './nsm.ts';
import { nsmPendingMax, nsmRequestBytesMax, nsmResponseBytesMax } from './tee-constants.ts';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

type Work = { kind: 'frame'; body: Uint8Array } | { kind: 'oversized'; length: number };

/** Answers NSM requests on `stream` until it closes; resolves then. */
export function serveNsm(stream: Duplex, nsm: EmulatedNsm): Promise<void> {
  const reader = new FrameReader(nsmRequestBytesMax);
  const queue: Work[] = [];
  let working = false;

  const drain = async (): Promise<void> => {
    working = true;
    while (queue.length > 0 && !stream.destroyed) {
      const work = queue.shift() as Work;
      const response = work.kind === 'oversized' ? errorResponse('InputTooLarge') : await answer(nsm, work.body);
      assert.ok(response.length <= nsmResponseBytesMax, 'NSM response over the driver buffer');
      if (!stream.destroyed) stream.write(frame(response));
      if (queue.length < nsmPendingMax && stream.isPaused()) stream.resume();
    }
    working = false;
  };

  stream.on('data', (chunk: Buffer) => {
    queue.push(...reader.push(chunk));
    // Backpressure: a client that floods requests waits; it is not dropped.
    if (queue.length >= nsmPendingMax) stream.pause();
    if (!working) void drain();
  });
  return new Promise((resolve) => {
    stream.on('error', () => stream.destroy());
    stream.on('close', () => resolve());
  });
}

async function answer(nsm: EmulatedNsm, body: Uint8Array): Promise<Uint8Array> {
  const parsed = parseRequest(body);
  if (typeof parsed === 'string') return errorResponse(parsed);
  try {
    const document = await nsm.attest(parsed);
    return Uint8Array.from(encoder.encode(new Map([['Attestation', new Map([['document', document]])]])));
  } catch (err) {
    if (err instanceof EmulatedNsmError) return errorResponse(err.code);
    return errorResponse('InternalError');
  }
}

// Returns the attestation request, or the NSM error name that refuses it.
function parseRequest(body: Uint8Array): AttestRequest | NsmErrorName {
  let request: unknown;
  try {
    request = decodeUntrustedCbor(body, { maps: 'map', depthMax: 4, itemsMax: 64 });
  } catch {
    return 'InvalidArgument';
  }
  // Unit variants (DescribeNSM, GetRandom) arrive as bare strings.
  if (typeof request === 'string') return 'InvalidOperation';
  if (!(request instanceof Map) || request.size !== 1) return 'InvalidArgument';
  const [[operation, args]] = [...request] as [[unknown, unknown]];
  if (operation !== 'Attestation') return typeof operation === 'string' ? 'InvalidOperation' : 'InvalidArgument';
  if (!(args instanceof Map)) return 'InvalidArgument';
  const fields: Record<string, Uint8Array | null> = {};
  for (const name of ['user_data', 'nonce', 'public_key']) {
    const value: unknown = args.get(name) ?? null;
    if (value !== null && !(value instanceof Uint8Array)) return 'InvalidArgument';
    fields[name] = value;
  }
  return { userData: fields['user_data'], nonce: fields['nonce'], publicKey: fields['public_key'] };
}

function errorResponse(code: NsmErrorName): Uint8Array {
  return Uint8Array.from(encoder.encode(new Map([['Error', code]])));
}
