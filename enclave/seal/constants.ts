/**
 * Limits and formats of the sealed log (enclave/seal/log.ts). Every length
 * read from a blob is checked against one of these before it is used.
 */
import { blobBytesMax } from '../../protocol/blob-wire.ts';

/** One WAL record's plaintext (a put carries at most a 512 KiB value plus its key). */
export const recordBytesMax = 1024 * 1024;
/** A segment (one blob) is cut before it would exceed this. */
export const segmentBytesMax = blobBytesMax;
/** Records per segment: bounds the work of one blob write and the parse loop. */
export const segmentRecordsMax = 65_536;
/** Plaintext bytes per snapshot chunk (one blob each). */
export const snapshotChunkBytes = 4 * 1024 * 1024;
/** Chunks per snapshot: bounds a snapshot at 4 GiB. */
export const snapshotChunksMax = 1024;
/** Segments the store keeps before it refuses to open (compaction keeps far fewer). */
export const segmentsMax = 60_000;

export const gcmTagBytes = 16;
export const gcmNonceBytes = 12;
export const nodeTagBytes = 8;
export const snapIdBytes = 8;

/** Segment v1 (written whole by one put): magic | version 1 | nodeTag | recordCount u32. */
export const segmentMagic = Buffer.from('EKVL', 'latin1');
export const segmentHeaderBytes = 4 + 1 + nodeTagBytes + 4;
/** Segment v2 (append-only, docs/durability.md T1-T6): magic | version 2 | nodeTag | firstSeq u64, then records to the end. */
export const appendFormatVersion = 2;
export const appendHeaderBytes = 4 + 1 + nodeTagBytes + 8;
/** In a v2 segment each record header is followed by a keyed MAC of it, so a length the host changed is never believed. */
export const headerMacBytes = 16;
/** Record: seq u64 | prevTag | nonce | ctLen u32 | ct | tag. */
export const recordHeaderBytes = 8 + gcmTagBytes + gcmNonceBytes + 4;
/** Snapshot chunk: magic | version | nodeTag | seq u64 | chainTag | snapId | index u32 | count u32 | nonce | ct | tag. */
export const snapshotMagic = Buffer.from('EKVS', 'latin1');
export const snapshotHeaderBytes = 4 + 1 + nodeTagBytes + 8 + gcmTagBytes + snapIdBytes + 4 + 4 + gcmNonceBytes;
export const formatVersion = 1;

export const segmentPrefix = 'wal-';
export const snapshotPrefix = 'snap-';

if (segmentHeaderBytes + recordHeaderBytes + recordBytesMax + gcmTagBytes > segmentBytesMax) {
  throw new Error('a maximal record must fit in one segment');
}
if (snapshotHeaderBytes + snapshotChunkBytes + gcmTagBytes > blobBytesMax) {
  throw new Error('a snapshot chunk must fit in one blob');
}
