/**
 * The enclave's access to its Nitro Security Module. Everything above this
 * file sees only `Nsm`; two implementations sit behind it:
 * - `StreamNsm`: the NSM API's CBOR messages, u32-BE length-prefixed, over a
 *   byte stream. The emulator's launcher hands the enclave such a stream on
 *   fd 3 and sets EKV_NSM=fd:3.
 * - `LibNsm` (enclave/nsm-lib.ts): the same CBOR messages through the NSM
 *   driver's ioctl on /dev/nsm (the C shim infra/enclave/nsm/ekv-nsm.c, via
 *   koffi), the default (EKV_NSM unset or `libnsm`) on real Nitro.
 * The request and response shapes are those of aws-nitro-enclaves-nsm-api:
 * {"Attestation": {"user_data", "nonce", "public_key"}} -> {"Attestation":
 * {"document"}} or {"Error": "<ErrorCode>"}.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { writeSync } from 'node:fs';
import { Encoder } from 'cbor-x';
import { decodeUntrustedCbor } from '../verifier/strict-cbor.ts';

export interface AttestationRequest {
  userData?: Uint8Array;
  nonce?: Uint8Array;
  publicKey?: Uint8Array;
}

export interface Nsm {
  attest(req: AttestationRequest): Promise<Uint8Array>;
  close(): void;
}

/** The NSM refuses user_data, nonce and public_key over 1024 bytes each. */
export const nsmFieldBytesMax = 1024;
/** The NSM driver's response buffer (0x3000): no genuine response is longer. */
export const nsmResponseBytesMax = 0x3000;
/** The NSM driver's request buffer (0x1000): three fields of 1024 bytes and their CBOR fit. */
export const nsmRequestBytesMax = 0x1000;
/**
 * Requests queued or in flight before attest() refuses with BUSY, in both implementations (StreamNsm,
 * LibNsm). Inbound handshakes may hold at most handshakeAttestationsMax of them (enclave/admission.ts),
 * so the enclave's own attestations (its outbound peer handshakes, KMS Recipient documents) always
 * find room, whatever a flood of hellos does.
 */
export const nsmPendingMax = 64;
/** A response slower than this means the channel is stuck. */
export const nsmTimeoutMs = 30_000;

export type NsmErrorCode =
  // The NSM's own ErrorCode values, renamed in our style.
  | 'INVALID_ARGUMENT' | 'INVALID_INDEX' | 'INVALID_RESPONSE' | 'READ_ONLY_INDEX'
  | 'INVALID_OPERATION' | 'BUFFER_TOO_SMALL' | 'INPUT_TOO_LARGE' | 'INTERNAL_ERROR'
  // The channel to it.
  | 'CLOSED' | 'MALFORMED_RESPONSE' | 'RESPONSE_TOO_LARGE' | 'TIMEOUT' | 'BUSY' | 'UNAVAILABLE';

const nsmErrorNames: Record<string, NsmErrorCode> = {
  InvalidArgument: 'INVALID_ARGUMENT',
  InvalidIndex: 'INVALID_INDEX',
  InvalidResponse: 'INVALID_RESPONSE',
  ReadOnlyIndex: 'READ_ONLY_INDEX',
  InvalidOperation: 'INVALID_OPERATION',
  BufferTooSmall: 'BUFFER_TOO_SMALL',
  InputTooLarge: 'INPUT_TOO_LARGE',
  InternalError: 'INTERNAL_ERROR',
};

export class NsmError extends Error {
  readonly code: NsmErrorCode;
  constructor(code: NsmErrorCode, message: string) {
    super(message);
    this.name = 'NsmError';
    this.code = code;
  }
}

export interface StreamNsmInit {
  timeoutMs?: number;
  pendingMax?: number;
  /** Called once when the other end hangs up (not after close()). */
  onHangup?: () => void;
}

interface Pending {
  resolve: (document: Uint8Array) => void;
  reject: (err: NsmError) => void;
}

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });

/**
 * An NSM reached over a byte stream. Requests are written as they come and
 * answered in order, so responses are matched first-in, first-out; anything
 * that could break that order (a timeout, an oversized or unsolicited frame)
 * fails every pending request and closes the channel.
 */
export class StreamNsm implements Nsm {
  readonly #stream: Duplex;
  readonly #timeoutMs: number;
  readonly #pendingMax: number;
  readonly #onHangup: (() => void) | undefined;
  readonly #pending: Pending[] = [];
  #buffered: Buffer = Buffer.alloc(0);
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(stream: Duplex, init: StreamNsmInit = {}) {
    this.#stream = stream;
    this.#timeoutMs = init.timeoutMs ?? nsmTimeoutMs;
    this.#pendingMax = init.pendingMax ?? nsmPendingMax;
    this.#onHangup = init.onHangup;
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
    stream.on('error', () => this.#hangup());
    stream.on('end', () => this.#hangup());
    stream.on('close', () => this.#hangup());
    this.#setRef(false);
  }

  attest(req: AttestationRequest): Promise<Uint8Array> {
    if (this.#closed) return Promise.reject(new NsmError('CLOSED', 'the NSM channel is closed'));
    if (this.#pending.length >= this.#pendingMax) {
      return Promise.reject(new NsmError('BUSY', `${this.#pending.length} NSM requests already pending`));
    }
    let body: Uint8Array;
    try {
      body = encodeNsmRequest(req);
    } catch (err) {
      return Promise.reject(err);
    }
    const header = Buffer.alloc(4);
    header.writeUInt32BE(body.length, 0);
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#stream.write(Buffer.concat([header, body]));
      this.#armTimer();
      this.#setRef(true);
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#fail(new NsmError('CLOSED', 'the NSM channel was closed'));
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    while (this.#buffered.length >= 4) {
      const length = this.#buffered.readUInt32BE(0);
      if (length > nsmResponseBytesMax) {
        return this.#fail(new NsmError('RESPONSE_TOO_LARGE', `NSM response of ${length} bytes`));
      }
      if (this.#buffered.length < 4 + length) return;
      const body = this.#buffered.subarray(4, 4 + length);
      this.#buffered = this.#buffered.subarray(4 + length);
      const waiter = this.#pending.shift();
      if (!waiter) return this.#fail(new NsmError('MALFORMED_RESPONSE', 'an NSM response nobody asked for'));
      settle(waiter, body);
      this.#armTimer();
    }
  }

  // One timer for the oldest request: responses come in order, so if the
  // oldest is late, every later one is too.
  #armTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#pending.length === 0) {
      this.#setRef(false);
      return;
    }
    this.#timer = setTimeout(() => {
      this.#fail(new NsmError('TIMEOUT', `no NSM response in ${this.#timeoutMs} ms`));
    }, this.#timeoutMs);
    this.#timer.unref();
  }

  #hangup(): void {
    if (this.#closed) return;
    this.#fail(new NsmError('CLOSED', 'the NSM channel was closed by the other end'));
    this.#onHangup?.();
  }

  #fail(err: NsmError): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    for (const waiter of this.#pending.splice(0)) waiter.reject(err);
    this.#buffered = Buffer.alloc(0);
    this.#stream.destroy();
  }

  // An idle NSM channel must not keep the process alive by itself.
  #setRef(on: boolean): void {
    const socket = this.#stream as Partial<Socket>;
    if (on) socket.ref?.();
    else socket.unref?.();
  }
}

/** An attestation request as the NSM API's CBOR (fields checked and bounded first). */
export function encodeNsmRequest(req: AttestationRequest): Uint8Array {
  const args = new Map<string, Uint8Array | null>([
    ['user_data', field('user_data', req.userData)],
    ['nonce', field('nonce', req.nonce)],
    ['public_key', field('public_key', req.publicKey)],
  ]);
  return Uint8Array.from(encoder.encode(new Map([['Attestation', args]])));
}

function field(name: string, value: Uint8Array | undefined): Uint8Array | null {
  if (value === undefined) return null;
  if (!(value instanceof Uint8Array)) throw new NsmError('INVALID_ARGUMENT', `${name} is not bytes`);
  if (value.length > nsmFieldBytesMax) {
    throw new NsmError('INPUT_TOO_LARGE', `${name} is ${value.length} bytes, over ${nsmFieldBytesMax}`);
  }
  return value;
}

function settle(waiter: Pending, body: Uint8Array): void {
  try {
    waiter.resolve(decodeNsmResponse(body));
  } catch (err) {
    waiter.reject(err instanceof NsmError ? err : new NsmError('MALFORMED_RESPONSE', 'the NSM response could not be read'));
  }
}

/**
 * An NSM response (untrusted bytes: from the device, or the emulator's stream) to the attestation document it
 * carries, or the typed error it names. Strict: one CBOR item, `{"Attestation": {"document": bytes}}` or
 * `{"Error": "<ErrorCode>"}`; anything else is MALFORMED_RESPONSE. Bounded before decoding.
 */
export function decodeNsmResponse(body: Uint8Array): Uint8Array {
  if (body.length > nsmResponseBytesMax) throw new NsmError('RESPONSE_TOO_LARGE', `NSM response of ${body.length} bytes`);
  let response: unknown;
  try {
    response = decodeUntrustedCbor(body, { maps: 'map', depthMax: 4, itemsMax: 64 });
  } catch {
    throw new NsmError('MALFORMED_RESPONSE', 'the NSM response is not CBOR');
  }
  if (response instanceof Map && response.size === 1) {
    const attestation: unknown = response.get('Attestation');
    const document: unknown = attestation instanceof Map ? attestation.get('document') : undefined;
    if (document instanceof Uint8Array) return Uint8Array.from(document);
    const name: unknown = response.get('Error');
    if (typeof name === 'string') {
      const code = (Object.hasOwn(nsmErrorNames, name) ? nsmErrorNames[name] : undefined) ?? 'INTERNAL_ERROR';
      throw new NsmError(code, `the NSM refused the request: ${name.slice(0, 64)}`);
    }
  }
  throw new NsmError('MALFORMED_RESPONSE', 'the NSM response has an unknown shape');
}

/**
 * The NSM this process was given: EKV_NSM=fd:<n> (the emulator, n >= 3) or
 * `libnsm` (the default, /dev/nsm on Nitro). In the emulator the stream's
 * other end is the launcher; if it hangs up the launcher is gone, and the
 * enclave exits rather than live on as an orphan.
 */
export async function openNsm(env: NodeJS.ProcessEnv = process.env): Promise<Nsm> {
  const mode = env['EKV_NSM'] ?? 'libnsm';
  const fdMatch = /^fd:(\d{1,4})$/.exec(mode);
  if (fdMatch) {
    const fd = Number(fdMatch[1]);
    if (fd < 3) throw new NsmError('UNAVAILABLE', `EKV_NSM=${mode}: stdio descriptors cannot carry the NSM`);
    return new StreamNsm(new Socket({ fd, readable: true, writable: true }), { onHangup: exitOrphaned });
  }
  if (mode === 'libnsm') {
    const { LibNsm } = await import('./nsm-lib.ts');
    return new LibNsm();
  }
  throw new NsmError('UNAVAILABLE', `EKV_NSM=${mode.slice(0, 32)}: expected fd:<n> or libnsm`);
}

function exitOrphaned(): void {
  // Synchronous, so the line is written before the process ends.
  const line = JSON.stringify({ level: 60, time: Date.now(), svc: 'enclave', msg: 'NSM channel closed: the launcher is gone, exiting' });
  writeSync(2, line + '\n');
  process.exit(70);
}
