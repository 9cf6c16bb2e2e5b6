/**
 * Keys of the sealed log, derived from the KMS data key. HKDF binds them to the
 * node's store id, so a blob sealed for one node never authenticates under
 * another node's keys even if both used the same data key.
 */
import { createHash, hkdfSync } from 'node:crypto';
import { nodeTagBytes } from './constants.ts';

export interface SealKeys {
  wal: Buffer;
  /** HMAC key of the append-only segments' record headers (docs/durability.md T3, T4). */
  walHeader: Buffer;
  snapshot: Buffer;
  /** A short public tag of the store id, written in clear in each blob to tell "foreign" from "corrupt". */
  nodeTag: Buffer;
}

export function deriveSealKeys(dataKey: Uint8Array, nodeId: Uint8Array): SealKeys {
  if (dataKey.length !== 32) throw new RangeError('data key must be 32 bytes');
  if (nodeId.length < 1 || nodeId.length > 64) throw new RangeError('nodeId must be 1..64 bytes');
  const derive = (label: string): Buffer =>
    Buffer.from(hkdfSync('sha256', dataKey, nodeId, `ekv-seal-v1 ${label}`, 32));
  const nodeTag = createHash('sha256').update('ekv-seal-v1 node').update(nodeId).digest().subarray(0, nodeTagBytes);
  return { wal: derive('wal'), walHeader: derive('wal header'), snapshot: derive('snapshot'), nodeTag: Buffer.from(nodeTag) };
}
