/**
 * The request checks every entry point shares (key 1..keyBytesMax bytes, value
 * 0..valueBytesMax) and the local read; writes are the owner's (cluster/store.ts).
 */
import { keyBytesMax, valueBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import type { RpcResult } from '../../protocol/rpc.ts';
import type { Partition } from './partition.ts';

export function requestKey(req: Record<string, unknown>): Buffer {
  const k = req.k;
  if (!(k instanceof Uint8Array)) throw new EkvError('BAD_REQUEST', 'key must be bytes');
  if (k.length === 0) throw new EkvError('BAD_REQUEST', 'key must not be empty');
  if (k.length > keyBytesMax) throw new EkvError('KEY_TOO_LARGE', `key of ${k.length} bytes exceeds ${keyBytesMax}`);
  return Buffer.from(k.buffer, k.byteOffset, k.length);
}

export function requestValue(req: Record<string, unknown>): Buffer {
  const v = req.v;
  if (!(v instanceof Uint8Array)) throw new EkvError('BAD_REQUEST', 'value must be bytes');
  if (v.length > valueBytesMax) throw new EkvError('VALUE_TOO_LARGE', `value of ${v.length} bytes exceeds ${valueBytesMax}`);
  // Copy: the request buffer may be a view into a larger frame we must not retain.
  return Buffer.from(v);
}

export function localGet(p: Partition, key: Buffer): RpcResult {
  const e = p.get(key);
  // The version of the key's delete (0: never written) goes with NOT_FOUND, so that a client that saw a
  // newer version can tell a rolled-back "no value" from a delete (client/floor.ts).
  if (!e || e.value === null) throw new EkvError('NOT_FOUND', 'no such key', { version: e?.version ?? 0 });
  return { v: e.value, n: e.version };
}
