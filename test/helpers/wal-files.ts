// The host's view of a node's sealed log, for tests that tamper with it: the append-only segments
// (docs/durability.md T1-T6) and the byte range of each record in them, read from the clear parts of the
// format (the segment header and each record's length; nothing is decrypted).
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const segmentHeaderBytes = 21; // "EKVL" | 2 | nodeTag(8) | firstSeq u64
const recordHeaderBytes = 40 + 16; // seq | prevTag | nonce | len u32, then the header's MAC
const lenAt = 8 + 16 + 12;
const tagBytes = 16;

export interface WalRecord {
  file: string;
  start: number;
  end: number;
}

export function walSegments(dataDir: string): string[] {
  return readdirSync(dataDir).filter((n) => /^wal-[0-9a-f]{16}$/.test(n)).sort();
}

/** Every record of the log, oldest first (only whole records; a torn tail is left out). */
export function walRecords(dataDir: string): WalRecord[] {
  const out: WalRecord[] = [];
  for (const name of walSegments(dataDir)) {
    const file = join(dataDir, name);
    const b = readFileSync(file);
    if (b.length < segmentHeaderBytes || b[4] !== 2) throw new Error(`${name} is not an append-only segment`);
    let off = segmentHeaderBytes;
    while (off + recordHeaderBytes <= b.length) {
      const end = off + recordHeaderBytes + b.readUInt32BE(off + lenAt) + tagBytes;
      if (end > b.length) break;
      out.push({ file, start: off, end });
      off = end;
    }
  }
  return out;
}

/** Flips one bit at `at` bytes into the record (negative: from its end). */
export function flipRecordByte(r: WalRecord, at: number): void {
  const b = readFileSync(r.file);
  const i = at >= 0 ? r.start + at : r.end + at;
  b[i] = (b[i] as number) ^ 0x01;
  writeFileSync(r.file, b);
}

/** Flips a ciphertext bit of the log's second-to-last record: damage that no torn write explains (T4). */
export function flipInnerRecord(dataDir: string): void {
  const all = walRecords(dataDir);
  const r = all.at(-2);
  if (r === undefined) throw new Error('the log holds fewer than two records');
  flipRecordByte(r, recordHeaderBytes + 1);
}

/** Rewrites a segment file with its records in a new order (indexes into that file's records; repeats allowed). */
export function rewriteRecords(file: string, order: (records: Buffer[]) => Buffer[]): void {
  const b = readFileSync(file);
  const rs: Buffer[] = [];
  let off = segmentHeaderBytes;
  while (off + recordHeaderBytes <= b.length) {
    const end = off + recordHeaderBytes + b.readUInt32BE(off + lenAt) + tagBytes;
    if (end > b.length) break;
    rs.push(b.subarray(off, end));
    off = end;
  }
  writeFileSync(file, Buffer.concat([b.subarray(0, segmentHeaderBytes), ...order(rs)]));
}
