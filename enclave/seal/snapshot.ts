/**
 * Sealed snapshots: the caller's state at sequence number `seq`, split into
 * chunks of at most `snapshotChunkBytes`, each AES-256-GCM under the snapshot
 * key. The whole clear header is the AAD: node tag, `seq`, the WAL chain tag at
 * `seq` (where the log continues), a random snapshot id and the chunk's index
 * and count, so chunks cannot be moved between snapshots or positions.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import {
  formatVersion, gcmNonceBytes, gcmTagBytes, nodeTagBytes, snapIdBytes, snapshotChunkBytes, snapshotChunksMax,
  snapshotHeaderBytes, snapshotMagic,
} from './constants.ts';
import { SealError } from './errors.ts';

const snapDomain = Buffer.from('ekv-seal-v1 snapshot chunk', 'latin1');

export interface SnapshotChunkHeader {
  seq: number;
  chainTag: Buffer;
  snapId: Buffer;
  index: number;
  count: number;
}

export function snapshotChunkName(seq: number, index: number): string {
  return `snap-${seq.toString(16).padStart(16, '0')}-${index.toString(16).padStart(4, '0')}`;
}

export function parseSnapshotChunkName(name: string): { seq: number; index: number } | null {
  const m = /^snap-([0-9a-f]{16})-([0-9a-f]{4})$/.exec(name);
  if (m === null) return null;
  const seq = Number.parseInt(m[1] as string, 16);
  const index = Number.parseInt(m[2] as string, 16);
  return Number.isSafeInteger(seq) && index < snapshotChunksMax ? { seq, index } : null;
}

export function sealSnapshot(key: Buffer, nodeTag: Buffer, seq: number, chainTag: Buffer, state: Uint8Array): Buffer[] {
  const steps = sealSnapshotSlices(key, nodeTag, seq, chainTag, state);
  for (;;) {
    const r = steps.next();
    if (r.done === true) return r.value;
  }
}

/** Plaintext sealed between two yields of sealSnapshotSlices. */
export const snapshotSliceBytes = 512 * 1024;

/**
 * sealSnapshot a slice at a time: the same chunks (one AES-GCM stream per chunk, fed `sliceBytes` of plaintext
 * per step), yielding between steps so that a driver can let other work run in between (a large snapshot does
 * not hold the event loop: docs/durability.md "Snapshots off the request path"). Returns the chunks.
 */
export function* sealSnapshotSlices(
  key: Buffer, nodeTag: Buffer, seq: number, chainTag: Buffer, state: Uint8Array, sliceBytes = snapshotSliceBytes,
): Generator<void, Buffer[], void> {
  const count = Math.max(1, Math.ceil(state.length / snapshotChunkBytes));
  if (count > snapshotChunksMax) throw new RangeError(`snapshot of ${state.length} bytes exceeds the limit`);
  const snapId = randomBytes(snapIdBytes);
  const chunks: Buffer[] = [];
  for (let index = 0; index < count; index++) {
    const nonce = randomBytes(gcmNonceBytes);
    const header = encodeHeader(nodeTag, { seq, chainTag, snapId, index, count }, nonce);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(Buffer.concat([snapDomain, header]));
    const part = state.subarray(index * snapshotChunkBytes, (index + 1) * snapshotChunkBytes);
    const pieces: Buffer[] = [header];
    for (let off = 0; off < part.length || off === 0; off += sliceBytes) {
      pieces.push(cipher.update(part.subarray(off, off + sliceBytes)));
      if (off + sliceBytes < part.length) yield;
    }
    pieces.push(cipher.final(), cipher.getAuthTag());
    chunks.push(Buffer.concat(pieces));
    if (index + 1 < count) yield;
  }
  return chunks;
}

function encodeHeader(nodeTag: Buffer, h: SnapshotChunkHeader, nonce: Buffer): Buffer {
  const header = Buffer.allocUnsafe(snapshotHeaderBytes);
  let off = snapshotMagic.copy(header, 0);
  off = header.writeUInt8(formatVersion, off);
  off += nodeTag.copy(header, off);
  off = header.writeBigUInt64BE(BigInt(h.seq), off);
  off += h.chainTag.copy(header, off);
  off += h.snapId.copy(header, off);
  off = header.writeUInt32BE(h.index, off);
  off = header.writeUInt32BE(h.count, off);
  nonce.copy(header, off);
  return header;
}

/** Authenticates one chunk; returns its header and plaintext. */
export function openSnapshotChunk(key: Buffer, nodeTag: Buffer, blob: Uint8Array, name: string): SnapshotChunkHeader & { plaintext: Buffer } {
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
  if (buf.length < snapshotHeaderBytes + gcmTagBytes) throw new SealError('SEAL_TRUNCATED', `snapshot chunk ${name} is too short`);
  if (buf.length > snapshotHeaderBytes + snapshotChunkBytes + gcmTagBytes) {
    throw new SealError('SEAL_CORRUPT', `snapshot chunk ${name} is too long`);
  }
  if (!buf.subarray(0, 4).equals(snapshotMagic) || buf.readUInt8(4) !== formatVersion) {
    throw new SealError('SEAL_CORRUPT', `snapshot chunk ${name} has a bad magic or version`);
  }
  if (!buf.subarray(5, 5 + nodeTagBytes).equals(nodeTag)) throw new SealError('SEAL_FOREIGN', `snapshot chunk ${name} belongs to another node`);
  let off = 5 + nodeTagBytes;
  const seq = Number(buf.readBigUInt64BE(off));
  off += 8;
  const chainTag = buf.subarray(off, off + gcmTagBytes);
  off += gcmTagBytes;
  const snapId = buf.subarray(off, off + snapIdBytes);
  off += snapIdBytes;
  const index = buf.readUInt32BE(off);
  const count = buf.readUInt32BE(off + 4);
  const nonce = buf.subarray(off + 8, off + 8 + gcmNonceBytes);
  let plaintext: Buffer;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAAD(Buffer.concat([snapDomain, buf.subarray(0, snapshotHeaderBytes)]));
    decipher.setAuthTag(buf.subarray(buf.length - gcmTagBytes));
    plaintext = Buffer.concat([decipher.update(buf.subarray(snapshotHeaderBytes, buf.length - gcmTagBytes)), decipher.final()]);
  } catch (cause) {
    throw new SealError('SEAL_CORRUPT', `snapshot chunk ${name} failed authentication`, { cause });
  }
  if (count < 1 || count > snapshotChunksMax || index >= count) throw new SealError('SEAL_CORRUPT', `snapshot chunk ${name} has index ${index}/${count}`);
  return { seq, chainTag, snapId, index, count, plaintext };
}
