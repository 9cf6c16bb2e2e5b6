/**
 * Recovery: read the newest complete snapshot and the WAL segments after it,
 * authenticate everything, and check that the records form one unbroken chain
 * from the snapshot (or from sequence 1). Any break is a typed SealError and no
 * data is returned: the caller then recovers from the ring's replicas instead.
 *
 * What recovery cannot see on its own: the host dropping the newest segments
 * (or all of them after a snapshot), which looks exactly like an older genuine
 * state. `lastSeq` is returned so the caller can compare it with what the ring
 * acknowledged (see assertNotRolledBack in log.ts).
 */
import type { BlobClient } from './blob-client.ts';
import { segmentPrefix, segmentsMax, snapshotPrefix } from './constants.ts';
import { SealError } from './errors.ts';
import type { SealKeys } from './keys.ts';
import { genesisTag, openRecord, parseAnySegment, parseSegmentName, type RawRecord } from './record.ts';
import { openSnapshotChunk, parseSnapshotChunkName } from './snapshot.ts';

export interface SegmentInfo {
  name: string;
  firstSeq: number;
  lastSeq: number;
}

export interface Recovered {
  /** The newest complete snapshot's state, or null. */
  snapshot: Buffer | null;
  snapshotSeq: number;
  /** Records after the snapshot, in order: records[i] has sequence snapshotSeq + 1 + i. */
  records: Buffer[];
  lastSeq: number;
  /** Internal: where the chain continues, live segments and blobs left over by an interrupted compaction. */
  lastTag: Buffer;
  segments: SegmentInfo[];
  snapshotNames: string[];
  obsolete: string[];
  /**
   * The newest segment ended in a torn tail (docs/durability.md T3): its intact prefix (`keep`, null when
   * no record of it is left) must replace it before the store appends again, and how many bytes were cut.
   */
  torn: { name: string; keep: Buffer | null; cutBytes: number } | null;
}

/** Segments fetched ahead while the previous one is checked. */
const prefetch = 4;

export async function recoverLog(blobs: BlobClient, keys: SealKeys): Promise<Recovered> {
  const snapNames = await blobs.list(snapshotPrefix);
  const segNames = await blobs.list(segmentPrefix);
  const snap = await loadNewestSnapshot(blobs, keys, snapNames);
  const base = snap?.seq ?? 0;
  const segs = segNames
    .map((name) => ({ name, firstSeq: parseSegmentName(name) }))
    .filter((s): s is { name: string; firstSeq: number } => s.firstSeq !== null);
  if (segs.length > segmentsMax) throw new SealError('SEAL_IO', `${segs.length} segments exceed the limit`);
  // A segment is wholly covered by the snapshot when the next one starts at or before base + 1.
  const covered = (i: number): boolean => (segs[i + 1]?.firstSeq ?? Infinity) <= base + 1;
  const live = segs.filter((_, i) => !covered(i));
  const obsolete = segs.filter((_, i) => covered(i)).map((s) => s.name);
  obsolete.push(...snapNames.filter((n) => !(snap?.names ?? []).includes(n)));
  const walk = await walkSegments(blobs, keys, live, base, snap?.chainTag ?? genesisTag);
  return {
    snapshot: snap?.state ?? null,
    snapshotSeq: base,
    records: walk.records,
    lastSeq: base + walk.records.length,
    lastTag: walk.lastTag,
    segments: walk.segments,
    snapshotNames: snap?.names ?? [],
    obsolete,
    torn: walk.torn,
  };
}

async function walkSegments(
  blobs: BlobClient, keys: SealKeys, live: Array<{ name: string; firstSeq: number }>, base: number, chainTag: Buffer,
): Promise<{ records: Buffer[]; lastTag: Buffer; segments: SegmentInfo[]; torn: Recovered['torn'] }> {
  const records: Buffer[] = [];
  const segments: SegmentInfo[] = [];
  let torn: Recovered['torn'] = null;
  let nextSeq = base + 1;
  let prevTag = chainTag;
  // Prefetched reads that are abandoned when an earlier segment fails must not surface as unhandled.
  const fetch = (i: number): Promise<Uint8Array | null> => {
    const p = blobs.get(live[i]!.name);
    p.catch(() => undefined);
    return p;
  };
  const fetches = live.map((_, i) => (i < prefetch ? fetch(i) : null));
  for (let i = 0; i < live.length; i++) {
    const seg = live[i]!;
    if (i + prefetch < live.length) fetches[i + prefetch] = fetch(i + prefetch);
    if (seg.firstSeq > nextSeq) throw new SealError('SEAL_GAP', `records ${nextSeq}..${seg.firstSeq - 1} are missing`);
    const blob = await fetches[i]!;
    fetches[i] = null;
    if (blob === null) throw new SealError('SEAL_GAP', `segment ${seg.name} vanished`);
    const newest = i === live.length - 1;
    const parsed = parseAnySegment(blob, keys, seg.name, seg.firstSeq, newest);
    const raws = parsed.raws;
    let tornAt = parsed.tornAt;
    // T3: the newest segment's last record may be a torn write that failed authentication (never served).
    const last = raws[raws.length - 1];
    if (newest && last !== undefined && last.offset >= 0 && !authenticates(keys, last)) {
      raws.pop();
      tornAt = last.offset;
    }
    if (tornAt !== null) {
      const keep = raws.length > 0 ? Buffer.from(blob.subarray(0, tornAt)) : null;
      torn = { name: seg.name, keep, cutBytes: blob.length - tornAt };
    }
    if (raws.length === 0) {
      if (tornAt !== null) continue; // a segment torn before its first record: removed at open
      throw new SealError('SEAL_TRUNCATED', `segment ${seg.name} holds no record`);
    }
    checkSegmentOrder(raws, seg.name, seg.firstSeq);
    for (const raw of raws) {
      if (raw.seq <= base && nextSeq === base + 1) continue; // before the snapshot, in a straddling segment
      if (raw.seq > nextSeq) throw new SealError('SEAL_GAP', `record ${nextSeq} is missing`);
      if (raw.seq < nextSeq) throw new SealError('SEAL_REPLAYED', `record ${raw.seq} appears twice`);
      const plaintext = openRecord(keys.wal, keys.nodeTag, raw);
      if (!raw.prevTag.equals(prevTag)) throw new SealError('SEAL_REPLAYED', `record ${raw.seq} belongs to another history`);
      records.push(plaintext);
      prevTag = raw.tag;
      nextSeq += 1;
    }
    segments.push({ name: seg.name, firstSeq: seg.firstSeq, lastSeq: raws[raws.length - 1]!.seq });
  }
  return { records, lastTag: Buffer.from(prevTag), segments, torn };
}

function authenticates(keys: SealKeys, raw: RawRecord): boolean {
  try {
    openRecord(keys.wal, keys.nodeTag, raw);
    return true;
  } catch {
    return false;
  }
}

function checkSegmentOrder(raws: RawRecord[], name: string, firstSeq: number): void {
  if (raws[0]!.seq !== firstSeq) throw new SealError('SEAL_REORDERED', `segment ${name} holds records from ${raws[0]!.seq}`);
  for (let i = 1; i < raws.length; i++) {
    const step = raws[i]!.seq - raws[i - 1]!.seq;
    if (step === 0) throw new SealError('SEAL_REPLAYED', `segment ${name} repeats record ${raws[i]!.seq}`);
    if (step < 0) throw new SealError('SEAL_REORDERED', `segment ${name} has record ${raws[i]!.seq} after ${raws[i - 1]!.seq}`);
    if (step > 1) throw new SealError('SEAL_GAP', `segment ${name} skips records after ${raws[i - 1]!.seq}`);
  }
}

interface LoadedSnapshot {
  seq: number;
  chainTag: Buffer;
  state: Buffer;
  names: string[];
}

/**
 * The newest snapshot whose chunks are all present. An incomplete one (a crash
 * while writing it) is skipped; a chunk that fails authentication is not.
 */
async function loadNewestSnapshot(blobs: BlobClient, keys: SealKeys, names: string[]): Promise<LoadedSnapshot | null> {
  const bySeq = new Map<number, string[]>();
  for (const name of names) {
    const parsed = parseSnapshotChunkName(name);
    if (parsed === null) continue;
    bySeq.set(parsed.seq, [...(bySeq.get(parsed.seq) ?? []), name]);
  }
  for (const seq of [...bySeq.keys()].sort((a, b) => b - a)) {
    const loaded = await loadSnapshotAt(blobs, keys, seq, bySeq.get(seq)!);
    if (loaded !== null) return loaded;
  }
  return null;
}

async function loadSnapshotAt(blobs: BlobClient, keys: SealKeys, seq: number, names: string[]): Promise<LoadedSnapshot | null> {
  const parts = new Map<string, { chainTag: Buffer; count: number; chunks: Map<number, Buffer> }>();
  for (const name of names) {
    const blob = await blobs.get(name);
    if (blob === null) continue;
    const chunk = openSnapshotChunk(keys.snapshot, keys.nodeTag, blob, name);
    const named = parseSnapshotChunkName(name)!;
    if (chunk.seq !== seq || chunk.index !== named.index) throw new SealError('SEAL_REORDERED', `snapshot chunk under the name ${name}`);
    const id = chunk.snapId.toString('hex');
    const part = parts.get(id) ?? { chainTag: chunk.chainTag, count: chunk.count, chunks: new Map() };
    part.chunks.set(chunk.index, chunk.plaintext);
    parts.set(id, part);
  }
  for (const part of parts.values()) {
    if (part.chunks.size !== part.count) continue;
    const ordered = Array.from({ length: part.count }, (_, i) => part.chunks.get(i)!);
    const kept = names.filter((n) => parseSnapshotChunkName(n)!.index < part.count);
    return { seq, chainTag: Buffer.from(part.chainTag), state: Buffer.concat(ordered), names: kept };
  }
  return null;
}
