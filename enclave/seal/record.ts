/**
 * WAL records and segments. A record is AES-256-GCM under the WAL key; its AAD
 * binds the node tag, its sequence number and the tag of the record before it
 * (a hash chain from the first record, or from a snapshot), so a record only
 * authenticates at its own place in its own history. `prevTag` is also stored
 * in clear (and authenticated), which tells a replayed genuine record from a
 * corrupted one.
 */
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';
import {
  appendFormatVersion, appendHeaderBytes, formatVersion, gcmNonceBytes, gcmTagBytes, headerMacBytes, nodeTagBytes,
  recordBytesMax, recordHeaderBytes, segmentHeaderBytes, segmentMagic, segmentRecordsMax,
} from './constants.ts';
import { SealError } from './errors.ts';

const walDomain = Buffer.from('ekv-seal-v1 wal record', 'latin1');
const walHeaderDomain = Buffer.from('ekv-seal-v2 wal record header', 'latin1');
export const genesisTag: Buffer = Buffer.alloc(gcmTagBytes);

export interface SealedRecord {
  seq: number;
  bytes: Buffer; // header || ct || tag
  tag: Buffer;
}

/** A record as found in a segment, authenticated lazily (see openRecord). */
export interface RawRecord {
  seq: number;
  prevTag: Buffer;
  nonce: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

function recordAad(nodeTag: Buffer, header: Buffer): Buffer {
  return Buffer.concat([walDomain, nodeTag, header]);
}

export function sealRecord(key: Buffer, nodeTag: Buffer, seq: number, prevTag: Buffer, nonce: Buffer, plaintext: Uint8Array): SealedRecord {
  const header = Buffer.allocUnsafe(recordHeaderBytes);
  header.writeBigUInt64BE(BigInt(seq), 0);
  prevTag.copy(header, 8);
  nonce.copy(header, 8 + gcmTagBytes);
  header.writeUInt32BE(plaintext.length, 8 + gcmTagBytes + gcmNonceBytes);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(recordAad(nodeTag, header));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const tag = cipher.getAuthTag();
  return { seq, bytes: Buffer.concat([header, ct, tag]), tag };
}

function headerMac(key: Buffer, nodeTag: Buffer, header: Buffer): Buffer {
  return createHmac('sha256', key).update(walHeaderDomain).update(nodeTag).update(header).digest().subarray(0, headerMacBytes);
}

/**
 * A record of an append-only (v2) segment: `header | MAC(header) | ct | tag`. The GCM part is the v1 record's
 * (same AAD: seq and prevTag are authenticated, the tag chains); the header MAC lets a reader believe a
 * record's length before it has the whole record (docs/durability.md T3, T4).
 */
export function sealAppendRecord(
  keys: { wal: Buffer; walHeader: Buffer }, nodeTag: Buffer, seq: number, prevTag: Buffer, nonce: Buffer, plaintext: Uint8Array,
): SealedRecord {
  const bodyAt = recordHeaderBytes + headerMacBytes;
  const out = Buffer.allocUnsafe(bodyAt + plaintext.length + gcmTagBytes);
  const header = out.subarray(0, recordHeaderBytes);
  header.writeBigUInt64BE(BigInt(seq), 0);
  prevTag.copy(header, 8);
  nonce.copy(header, 8 + gcmTagBytes);
  header.writeUInt32BE(plaintext.length, 8 + gcmTagBytes + gcmNonceBytes);
  headerMac(keys.walHeader, nodeTag, header).copy(out, recordHeaderBytes);
  const cipher = createCipheriv('aes-256-gcm', keys.wal, nonce);
  cipher.setAAD(recordAad(nodeTag, header));
  cipher.update(plaintext).copy(out, bodyAt);
  cipher.final();
  const tag = cipher.getAuthTag();
  tag.copy(out, bodyAt + plaintext.length);
  return { seq, bytes: out, tag };
}

/** Authenticates one record against its own header; throws SEAL_CORRUPT if anything was changed. */
export function openRecord(key: Buffer, nodeTag: Buffer, raw: RawRecord): Buffer {
  const header = Buffer.allocUnsafe(recordHeaderBytes);
  header.writeBigUInt64BE(BigInt(raw.seq), 0);
  raw.prevTag.copy(header, 8);
  raw.nonce.copy(header, 8 + gcmTagBytes);
  header.writeUInt32BE(raw.ciphertext.length, 8 + gcmTagBytes + gcmNonceBytes);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.nonce);
    decipher.setAAD(recordAad(nodeTag, header));
    decipher.setAuthTag(raw.tag);
    return Buffer.concat([decipher.update(raw.ciphertext), decipher.final()]);
  } catch (cause) {
    throw new SealError('SEAL_CORRUPT', `record ${raw.seq} failed authentication`, { cause });
  }
}

export function encodeSegment(nodeTag: Buffer, records: Buffer[]): Buffer {
  const header = Buffer.allocUnsafe(segmentHeaderBytes);
  segmentMagic.copy(header, 0);
  header.writeUInt8(formatVersion, 4);
  nodeTag.copy(header, 5);
  header.writeUInt32BE(records.length, 5 + nodeTagBytes);
  return Buffer.concat([header, ...records]);
}

/** Splits a segment into records, checking every length before slicing. Nothing is authenticated yet. */
export function parseSegment(blob: Uint8Array, nodeTag: Buffer, name: string): RawRecord[] {
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
  if (buf.length < segmentHeaderBytes) throw new SealError('SEAL_TRUNCATED', `segment ${name} is shorter than its header`);
  if (!buf.subarray(0, 4).equals(segmentMagic) || buf.readUInt8(4) !== formatVersion) {
    throw new SealError('SEAL_CORRUPT', `segment ${name} has a bad magic or version`);
  }
  if (!buf.subarray(5, 5 + nodeTagBytes).equals(nodeTag)) {
    throw new SealError('SEAL_FOREIGN', `segment ${name} was sealed for another node`);
  }
  const count = buf.readUInt32BE(5 + nodeTagBytes);
  if (count === 0 || count > segmentRecordsMax) throw new SealError('SEAL_CORRUPT', `segment ${name} declares ${count} records`);
  const records: RawRecord[] = [];
  let off = segmentHeaderBytes;
  for (let i = 0; i < count; i++) {
    if (buf.length - off < recordHeaderBytes) throw new SealError('SEAL_TRUNCATED', `segment ${name} ends inside record ${i}`);
    const seq = Number(buf.readBigUInt64BE(off));
    const ctLen = buf.readUInt32BE(off + 8 + gcmTagBytes + gcmNonceBytes);
    if (ctLen > recordBytesMax) throw new SealError('SEAL_CORRUPT', `segment ${name} record ${i} declares ${ctLen} bytes`);
    const end = off + recordHeaderBytes + ctLen + gcmTagBytes;
    if (end > buf.length) throw new SealError('SEAL_TRUNCATED', `segment ${name} ends inside record ${i}`);
    if (!Number.isSafeInteger(seq) || seq < 1) throw new SealError('SEAL_CORRUPT', `segment ${name} record ${i} has seq ${seq}`);
    records.push({
      seq,
      prevTag: buf.subarray(off + 8, off + 8 + gcmTagBytes),
      nonce: buf.subarray(off + 8 + gcmTagBytes, off + 8 + gcmTagBytes + gcmNonceBytes),
      ciphertext: buf.subarray(off + recordHeaderBytes, end - gcmTagBytes),
      tag: buf.subarray(end - gcmTagBytes, end),
    });
    off = end;
  }
  if (off !== buf.length) throw new SealError('SEAL_CORRUPT', `segment ${name} has ${buf.length - off} trailing bytes`);
  return records;
}

/** The header of an append-only (v2) segment whose first record is `firstSeq`. */
export function appendSegmentHeader(nodeTag: Buffer, firstSeq: number): Buffer {
  const header = Buffer.allocUnsafe(appendHeaderBytes);
  segmentMagic.copy(header, 0);
  header.writeUInt8(appendFormatVersion, 4);
  nodeTag.copy(header, 5);
  header.writeBigUInt64BE(BigInt(firstSeq), 5 + nodeTagBytes);
  return header;
}

export interface ParsedSegment {
  /** Records in file order, each with the offset of its first byte. Nothing is authenticated yet. */
  raws: Array<RawRecord & { offset: number }>;
  /** Where a torn tail starts (only ever in the newest segment, T3), or null. */
  tornAt: number | null;
}

/**
 * Splits a segment of either format into records, checking every length before slicing. In the newest
 * segment (`newest`), an append-only segment may end in a torn tail (docs/durability.md T3): a header or record
 * that runs past the end of the file, or bytes that are all zero from a record's first byte on. Anything else
 * malformed is refused, as in every other segment. The last record's authentication is the caller's (T3).
 */
export function parseAnySegment(
  blob: Uint8Array, keys: { nodeTag: Buffer; walHeader: Buffer }, name: string, firstSeq: number, newest: boolean,
): ParsedSegment {
  const nodeTag = keys.nodeTag;
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
  if (buf.length >= 5 && buf.subarray(0, 4).equals(segmentMagic) && buf.readUInt8(4) === formatVersion) {
    // v1 segments were written whole (one atomic put): no torn tail, any damage is refused.
    return { raws: parseSegment(blob, nodeTag, name).map((r) => ({ ...r, offset: -1 })), tornAt: null };
  }
  // Zero bytes from `from` to the end of the file (a file system that extended the file before its data landed).
  let lastNonZero = buf.length - 1;
  while (lastNonZero >= 0 && buf[lastNonZero] === 0) lastNonZero--;
  // The newest segment torn inside its own header (nothing but zeros after it): no record of it landed.
  if (newest && lastNonZero < appendHeaderBytes) return { raws: [], tornAt: 0 };
  if (buf.length < appendHeaderBytes) throw new SealError('SEAL_TRUNCATED', `segment ${name} is shorter than its header`);
  if (!buf.subarray(0, 4).equals(segmentMagic) || buf.readUInt8(4) !== appendFormatVersion) {
    throw new SealError('SEAL_CORRUPT', `segment ${name} has a bad magic or version`);
  }
  if (!buf.subarray(5, 5 + nodeTagBytes).equals(nodeTag)) {
    throw new SealError('SEAL_FOREIGN', `segment ${name} was sealed for another node`);
  }
  if (Number(buf.readBigUInt64BE(5 + nodeTagBytes)) !== firstSeq) {
    throw new SealError('SEAL_REORDERED', `segment ${name} says it starts at another record`);
  }
  const bodyAt = recordHeaderBytes + headerMacBytes;
  const raws: ParsedSegment['raws'] = [];
  let off = appendHeaderBytes;
  while (off < buf.length) {
    // T3 (a): less than a header left; or (d) a header that fails its MAC with nothing but zeros after it.
    if (buf.length - off < bodyAt) {
      if (newest) return { raws, tornAt: off };
      throw new SealError('SEAL_TRUNCATED', `segment ${name} ends inside record ${raws.length}`);
    }
    const header = buf.subarray(off, off + recordHeaderBytes);
    if (!headerMac(keys.walHeader, nodeTag, header).equals(buf.subarray(off + recordHeaderBytes, off + bodyAt))) {
      if (newest && lastNonZero < off + bodyAt) return { raws, tornAt: off };
      throw new SealError('SEAL_CORRUPT', `segment ${name} record ${raws.length} has a header that failed authentication`);
    }
    const seq = Number(header.readBigUInt64BE(0));
    const ctLen = header.readUInt32BE(8 + gcmTagBytes + gcmNonceBytes);
    if (ctLen > recordBytesMax || !Number.isSafeInteger(seq) || seq < 1) {
      throw new SealError('SEAL_CORRUPT', `segment ${name} record ${raws.length} has a malformed header`);
    }
    const end = off + bodyAt + ctLen + gcmTagBytes;
    // T3 (b): an authentic header whose record runs past the end of the file: the write was cut short.
    if (end > buf.length) {
      if (newest) return { raws, tornAt: off };
      throw new SealError('SEAL_TRUNCATED', `segment ${name} ends inside record ${raws.length}`);
    }
    raws.push({
      seq,
      offset: off,
      prevTag: header.subarray(8, 8 + gcmTagBytes),
      nonce: header.subarray(8 + gcmTagBytes, 8 + gcmTagBytes + gcmNonceBytes),
      ciphertext: buf.subarray(off + bodyAt, end - gcmTagBytes),
      tag: buf.subarray(end - gcmTagBytes, end),
    });
    off = end;
  }
  return { raws, tornAt: null };
}

export function segmentName(firstSeq: number): string {
  return `wal-${firstSeq.toString(16).padStart(16, '0')}`;
}

/** The first sequence number a segment's name claims, or null for a name we did not write. */
export function parseSegmentName(name: string): number | null {
  const m = /^wal-([0-9a-f]{16})$/.exec(name);
  if (m === null) return null;
  const seq = Number.parseInt(m[1] as string, 16);
  return Number.isSafeInteger(seq) && seq >= 1 ? seq : null;
}
