/**
 * The arguments of the enclave's data operations on the wire: one decoder per operation, validating every
 * field against the limits of protocol/constants.ts, and the encoder the enclave itself uses when it forwards
 * a client's operation to the range's owner (`fwd`: the client's own form, so both ends share one decoder).
 *
 *   get  {k}                                   key: bytes, 1..keyBytesMax
 *   put  {k, v, s: [session, seq, floor], iv?, t?}  value: bytes, 0..valueBytesMax; ifVersion: integer >= 0;
 *                                              t: ttl in ms, 1..ttlMsMax (counted in the enclave's own ticks)
 *   del  {k, s: [session, seq, floor], iv?}
 *   open {k}                                    open a write session on the key's range
 *   fwd  {fo: 'get'|'put'|'del'|'open', p, ...} peer only: the same, at the owner (i and o are the RPC envelope's),
 *                                              with p the caller's principal tag (principalTag) set by the entry node
 *
 * session >= 1, 0 <= floor <= seq (integers): the client's session of the key's range (SDK, client/index.ts).
 * Keys and values become latin1 strings for the core (one char per byte).
 */
import { keyBytesMax, ttlMsMax, valueBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import { createHash } from 'node:crypto';
import { anonPrincipal, type ClientOp, internalPrincipalPrefix, principalCharsMax } from '../data/index.ts';

/**
 * The principal tag a write session is bound to: derived by the node that took the request from the caller's
 * proven principal key ('k' + its SHA-256), or 'anon' for a caller without one. Never taken from a client's
 * message, so no client can name another's tag, nor the enclave's own ('#' + node name, `internalTag`).
 */
export function principalTag(principal: Buffer | null): string {
  return principal === null ? anonPrincipal : 'k' + createHash('sha256').update(principal).digest('hex');
}

export function internalTag(nodeName: string): string {
  return internalPrincipalPrefix + nodeName;
}

function bytes(x: unknown, what: string, min: number, max: number, tooLarge: 'KEY_TOO_LARGE' | 'VALUE_TOO_LARGE'): Buffer {
  if (!(x instanceof Uint8Array)) throw new EkvError('BAD_REQUEST', `${what} must be bytes`);
  if (x.length < min) throw new EkvError('BAD_REQUEST', `${what} must not be empty`);
  if (x.length > max) throw new EkvError(tooLarge, `${what} of ${x.length} bytes exceeds ${max}`);
  return Buffer.from(x.buffer, x.byteOffset, x.length);
}

function int(x: unknown, what: string, lo: number, hi = Number.MAX_SAFE_INTEGER): number {
  if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < lo || x > hi) throw new EkvError('BAD_REQUEST', `${what} must be an integer in [${lo}, ${hi}]`);
  return x;
}

export function decodeKey(req: Record<string, unknown>): Buffer {
  return bytes(req.k, 'key', 1, keyBytesMax, 'KEY_TOO_LARGE');
}

/** A client's key: keys starting with 0x00 are reserved for the enclave's own documents (ACLs, groups). */
export function decodeClientKey(req: Record<string, unknown>): Buffer {
  const key = decodeKey(req);
  if (key[0] === 0) throw new EkvError('FORBIDDEN', 'reserved key');
  return key;
}

function decodeIds(x: unknown): { session: number; seq: number; floor: number } {
  if (!Array.isArray(x) || x.length !== 3) throw new EkvError('BAD_REQUEST', 'a write needs s: [session, seq, floor] (open a session first)');
  const session = int(x[0], 'session', 1);
  const seq = int(x[1], 'seq', 0);
  const floor = int(x[2], 'floor', 0, seq);
  return { session, seq, floor };
}

function decodeIfVersion(x: unknown): number | null {
  return x === undefined || x === null ? null : int(x, 'ifVersion', 0);
}

/** One tick of the data core's clock in the enclave (performance.now(), never the host's time). */
export const dataTickMs = 10;

/** A put's ttl: ms on the wire, whole ticks (rounded up: never early) for the core. */
function decodeTtl(x: unknown): { ttl?: number } {
  return x === undefined || x === null ? {} : { ttl: Math.ceil(int(x, 'ttl', 1, ttlMsMax) / dataTickMs) };
}

export type DataOpName = 'get' | 'put' | 'del' | 'open';

/**
 * A data operation's arguments as the core's ClientOp. `shardOf` maps a key to its range (open names the
 * range of its key). `key` is the checked key (for the access check).
 */
export function decodeDataOp(op: DataOpName, req: Record<string, unknown>, key: Buffer, shardOf: (k: Buffer) => number, principal: string): ClientOp {
  const k = key.toString('latin1');
  switch (op) {
    case 'get':
      return { kind: 'get', key: k };
    case 'put': {
      const value = bytes(req.v, 'value', 0, valueBytesMax, 'VALUE_TOO_LARGE');
      return { kind: 'put', key: k, value: value.toString('latin1'), ifVersion: decodeIfVersion(req.iv), ...decodeIds(req.s), principal, ...decodeTtl(req.t) };
    }
    case 'del':
      return { kind: 'del', key: k, ifVersion: decodeIfVersion(req.iv), ...decodeIds(req.s), principal };
    case 'open':
      return { kind: 'open', shard: shardOf(key), principal };
  }
}

/** The forwarded form of a client's operation (`fwd`); `open` carries the range's key... or its shard. */
export function encodeForward(op: ClientOp): Record<string, unknown> {
  switch (op.kind) {
    case 'get':
      return { fo: 'get', k: Buffer.from(op.key, 'latin1') };
    case 'put':
      return { fo: 'put', k: Buffer.from(op.key, 'latin1'), v: Buffer.from(op.value, 'latin1'), s: [op.session, op.seq, op.floor], iv: op.ifVersion, p: op.principal, ...(op.ttl ? { t: op.ttl * dataTickMs } : {}) };
    case 'del':
      return { fo: 'del', k: Buffer.from(op.key, 'latin1'), s: [op.session, op.seq, op.floor], iv: op.ifVersion, p: op.principal };
    case 'open':
      return { fo: 'open', sh: op.shard, p: op.principal };
  }
}

/** The owner's side of `fwd`: the operation, validated as a client's would be (reserved keys allowed: peers are enclaves). */
export function decodeForward(req: Record<string, unknown>, shards: number, shardOf: (k: Buffer) => number): ClientOp {
  const o = req.fo;
  if (o !== 'get' && o !== 'put' && o !== 'del' && o !== 'open') throw new EkvError('BAD_REQUEST', 'bad forwarded operation');
  // The principal tag set by the forwarding enclave (an attested peer of this ring running this image).
  const p = o === 'get' ? '' : req.p;
  if (typeof p !== 'string' || (o !== 'get' && (p.length < 1 || p.length > principalCharsMax))) throw new EkvError('BAD_REQUEST', 'bad forwarded principal');
  if (o === 'open') return { kind: 'open', shard: int(req.sh, 'shard', 0, shards - 1), principal: p };
  return decodeDataOp(o, req, decodeKey(req), shardOf, p);
}
