/**
 * The data core's messages and log records as bytes (enclave/data/ is plain data with bigints and maps):
 *
 * - a peer message is CBOR of the core's PeerBody in its wire shape (enclave/data/codec.ts: maps become
 *   arrays), with every bigint (a member's ring position) as a 32-byte big-endian byte string;
 * - a message larger than one chunk travels as consecutive chunks over one attested session and is
 *   reassembled by the receiver (Reassembler), bounded per message (dataMessageBytesMax) and in total;
 * - a log record is CBOR of the core's LogRecord in the same shape, sealed by enclave/persist.ts.
 *
 * Decoding validates every field (validatePeerBody / validateLogRecord) after the bytes are bounded; the
 * CBOR item limit is the message's byte length (an item is at least one byte), so it is bounded by the
 * reassembly limit, never by a length the sender claims.
 */
import { decodeCbor, encodeCbor } from '../../protocol/cbor.ts';
import { frameBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import {
  DataError, logRecordToWire, peerBodyToWire, validateLogRecord, validatePeerBody, type LogRecord, type PeerBody,
} from '../data/index.ts';
import { idToBytes } from '../ring/index.ts';

/**
 * The most bytes one range may hold, as encoded: keys plus values (CBOR byte strings, one byte per byte) plus
 * each entry's encoding overhead (entryBytes in enclave/data/range.ts), tombstones' keys included. A whole range
 * moves in one promise, install or sync message, and lives in one log record, so a write that would take a
 * range past this is refused (VALUE_TOO_LARGE, "range full"): 16 MiB per range, 64 ranges, about 1 GiB per ring.
 */
export const rangeBytesMax = 16 * 1024 * 1024;
/**
 * One reassembled message: a full range plus its session table and framing. The table is at most 1024
 * sessions of 64 results, each result about 70 bytes with its digest: under 5 MiB.
 */
export const dataMessageBytesMax = rangeBytesMax + 8 * 1024 * 1024;
/** Bytes per chunk: well inside one frame (frameBytesMax) with the RPC envelope. */
export const dataChunkBytes = 256 * 1024;
/** Bytes being reassembled at once, over every sender: past this, partial messages are dropped. */
export const reassemblyBytesMax = 2 * dataMessageBytesMax;
/** A partial message not completed in this long is dropped (the core resends what matters). */
export const reassemblyTimeoutMs = 10_000;

if (dataChunkBytes + 4096 > frameBytesMax) throw new Error('a data chunk must fit in one frame');

/**
 * bigint → 32-byte string, recursively, and properties holding undefined left out (plain objects and arrays
 * only: maps are made arrays before). Copy on write: a part with nothing to change is returned as it is (a
 * write's log record usually has no bigint at all), so the common case allocates nothing; the encoding is the
 * same either way.
 */
export function toWire(x: unknown): unknown {
  if (typeof x === 'bigint') return idToBytes(x);
  if (x === null || typeof x !== 'object' || x instanceof Uint8Array) return x;
  if (Array.isArray(x)) {
    let out: unknown[] | null = null;
    for (let i = 0; i < x.length; i++) {
      const v: unknown = x[i];
      const w = toWire(v);
      if (out === null && w !== v) out = x.slice(0, i);
      if (out !== null) out.push(w);
    }
    return out ?? x;
  }
  const o = x as Record<string, unknown>;
  const proto: unknown = Object.getPrototypeOf(o);
  const plain = proto === Object.prototype || proto === null;
  const keys = Object.keys(o);
  let out: Record<string, unknown> | null = plain ? null : {};
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i] as string;
    const v = o[k];
    const w = v === undefined ? undefined : toWire(v);
    if (out === null && (w !== v || v === undefined)) {
      out = {};
      for (let j = 0; j < i; j++) out[keys[j] as string] = o[keys[j] as string];
    }
    if (out !== null && v !== undefined) out[k] = w;
  }
  return out ?? o;
}

/** The inverse for the one bigint field the core has: a member's `ring` (32 bytes → bigint). */
function fromWire(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(fromWire);
  if (x !== null && typeof x === 'object' && !(x instanceof Uint8Array)) {
    const o = x as Record<string, unknown>;
    for (const [k, v] of Object.entries(o)) {
      if (k === 'ring' && v instanceof Uint8Array) {
        if (v.length !== 32) throw new EkvError('BAD_REQUEST', 'member.ring must be 32 bytes');
        o[k] = BigInt('0x' + Buffer.from(v).toString('hex'));
      } else o[k] = fromWire(v);
    }
    return o;
  }
  return x;
}

function badRequest(err: unknown): EkvError {
  if (err instanceof EkvError) return err;
  if (err instanceof DataError) return new EkvError('BAD_REQUEST', err.message);
  return new EkvError('BAD_REQUEST', 'malformed data message');
}

/** Messages one batch may carry (what one core's turn sends one peer: lease renewals of many ranges, say). */
export const batchBodiesMax = 4096;

export function encodePeerBody(b: PeerBody): Buffer {
  return encodeCbor(toWire(peerBodyToWire(b)));
}

export function decodePeerBody(bytes: Uint8Array, shards: number): PeerBody {
  if (bytes.length > dataMessageBytesMax) throw new EkvError('BAD_REQUEST', 'data message too large');
  try {
    return validatePeerBody(fromWire(decodeCbor(bytes, Math.max(bytes.length, 16))), shards);
  } catch (err) {
    throw badRequest(err);
  }
}

/** Several messages to one peer, in order, as one CBOR array. */
export function encodePeerBatch(bs: readonly PeerBody[]): Buffer {
  return encodeCbor(bs.map((b) => toWire(peerBodyToWire(b))));
}

export function decodePeerBatch(bytes: Uint8Array, shards: number): PeerBody[] {
  if (bytes.length > dataMessageBytesMax) throw new EkvError('BAD_REQUEST', 'data message too large');
  try {
    const x = decodeCbor(bytes, Math.max(bytes.length, 16));
    if (!Array.isArray(x) || x.length === 0 || x.length > batchBodiesMax) throw new EkvError('BAD_REQUEST', 'a batch is 1..4096 messages');
    return x.map((b) => validatePeerBody(fromWire(b), shards));
  } catch (err) {
    throw badRequest(err);
  }
}

export function encodeLogRecord(r: LogRecord): Buffer {
  return encodeCbor(toWire(logRecordToWire(r)));
}

export function decodeLogRecord(bytes: Uint8Array, shards: number): LogRecord {
  return validateLogRecord(fromWire(decodeCbor(bytes, Math.max(bytes.length, 16))), shards);
}

/**
 * Several encoded LogRecords sealed as one (one driver batch): a CBOR array of their encodings. A LogRecord is
 * always a map, so an image that reads this as one LogRecord (every image before grouping) refuses it and fails
 * to load, rather than skipping it and coming up with a hole in its log (a downgrade during a roll).
 */
export function encodeLogGroup(encoded: readonly Buffer[]): Buffer {
  return encodeCbor(encoded);
}

/** The LogRecords of one sealed `['d', bytes]`: one LogRecord (a map), or a group (an array of encodings). */
export function decodeLogRecords(bytes: Uint8Array, shards: number): LogRecord[] {
  if (bytes.length === 0 || (bytes[0] as number) >> 5 !== 4) return [decodeLogRecord(bytes, shards)];
  const items = decodeCbor(bytes, Math.max(bytes.length, 16));
  if (!Array.isArray(items)) throw new EkvError('BAD_REQUEST', 'malformed log record group');
  return items.map((b) => {
    if (!(b instanceof Uint8Array)) throw new EkvError('BAD_REQUEST', 'a grouped log record is not bytes');
    return decodeLogRecord(b, shards);
  });
}

/** Split an encoded message into chunks of dataChunkBytes (one chunk when it fits). */
export function chunksOf(bytes: Buffer): Buffer[] {
  if (bytes.length <= dataChunkBytes) return [bytes];
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += dataChunkBytes) out.push(bytes.subarray(i, i + dataChunkBytes));
  return out;
}

interface Partial {
  id: number;
  count: number;
  parts: Buffer[];
  bytes: number;
  startedAt: number;
}

/**
 * Reassembly of chunked messages, one partial message per sender (its chunks arrive in order on one attested
 * session; a chunk of another message id discards the partial one). Bounded per message and in total.
 */
export class Reassembler {
  private readonly partials = new Map<string, Partial>();
  private total = 0;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A chunk; returns the whole message when this was its last chunk, else null. Throws BAD_REQUEST on nonsense. */
  add(sender: string, id: number, index: number, count: number, chunk: Buffer): Buffer | null {
    const maxCount = Math.ceil(dataMessageBytesMax / dataChunkBytes);
    if (!Number.isSafeInteger(id) || id < 0 || !Number.isInteger(count) || count < 1 || count > maxCount || !Number.isInteger(index) || index < 0 || index >= count) {
      throw new EkvError('BAD_REQUEST', 'bad chunk header');
    }
    if (chunk.length === 0 || chunk.length > dataChunkBytes) throw new EkvError('BAD_REQUEST', 'bad chunk size');
    this.expire();
    let p = this.partials.get(sender);
    if (p && (p.id !== id || p.count !== count || p.parts.length !== index)) {
      this.drop(sender);
      p = undefined;
    }
    if (!p) {
      if (index !== 0) return null; // the start was lost: the core resends
      p = { id, count, parts: [], bytes: 0, startedAt: this.now() };
      this.partials.set(sender, p);
    }
    if (this.total + chunk.length > reassemblyBytesMax) {
      this.drop(sender);
      throw new EkvError('UNAVAILABLE', 'too many chunked messages in flight');
    }
    p.parts.push(Buffer.from(chunk));
    p.bytes += chunk.length;
    this.total += chunk.length;
    if (p.parts.length < p.count) return null;
    this.drop(sender);
    return Buffer.concat(p.parts);
  }

  get bufferedBytes(): number {
    return this.total;
  }

  private drop(sender: string): void {
    const p = this.partials.get(sender);
    if (!p) return;
    this.total -= p.bytes;
    this.partials.delete(sender);
  }

  private expire(): void {
    const now = this.now();
    for (const [s, p] of this.partials) if (now - p.startedAt > reassemblyTimeoutMs) this.drop(s);
  }
}
