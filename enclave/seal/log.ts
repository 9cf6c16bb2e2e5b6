/**
 * The sealed store: a write-ahead log of opaque records plus snapshots, kept by
 * the untrusted host as blobs. The caller (the KV partition) owns the meaning of
 * records and snapshots; this module owns confidentiality, integrity, order and
 * durability (see enclave/seal/README.md for what is and is not protected).
 *
 * Appends are group-committed: a record is sealed at once (so the hash chain
 * advances synchronously), queued, and written with every record appended while
 * the previous blob write was in flight, as one segment. `append` resolves when
 * the segment holding the record is on the host's disk.
 */
import { m } from '../metrics.ts';
import { randomBytes } from 'node:crypto';
import type { BlobClient } from './blob-client.ts';
import { gcmNonceBytes, recordBytesMax, segmentBytesMax, segmentHeaderBytes, segmentRecordsMax } from './constants.ts';
import { SealError } from './errors.ts';
import { deriveSealKeys, type SealKeys } from './keys.ts';
import { encodeSegment, sealRecord, segmentName } from './record.ts';
import { recoverLog, type Recovered, type SegmentInfo } from './recover.ts';
import { sealSnapshot, snapshotChunkName } from './snapshot.ts';

export interface SealedStoreInit {
  blobs: BlobClient;
  /** The 32-byte data key from KMS (never leaves the enclave). */
  dataKey: Uint8Array;
  /** The node's stable store id (1..64 bytes), bound into every key and blob. */
  nodeId: Uint8Array;
}

export interface RecoveredState {
  /** The state passed to the newest complete writeSnapshot, or null. */
  snapshot: Buffer | null;
  /** The sequence number that snapshot covers (0 without one). */
  snapshotSeq: number;
  /** Records appended after the snapshot, oldest first. */
  records: Buffer[];
  /** The newest recovered sequence number: compare it with the ring (assertNotRolledBack). */
  lastSeq: number;
}

export interface SealedStoreStats {
  lastSeq: number;
  durableSeq: number;
  snapshotSeq: number;
  segments: number;
  /** Records appended since the newest snapshot: the caller snapshots when this grows large. */
  recordsSinceSnapshot: number;
}

interface Batch {
  firstSeq: number;
  lastSeq: number;
  records: Buffer[];
  bytes: number;
  waiters: Array<{ resolve: () => void; reject: (err: Error) => void }>;
}

export class SealedStore {
  private lastSeq: number;
  private lastTag: Buffer;
  private durableSeq: number;
  private snapshotSeq: number;
  private segments: SegmentInfo[];
  private snapshotNames: string[];
  private readonly queue: Batch[] = [];
  private flushing: Promise<void> | null = null;
  private snapshotting: Promise<void> = Promise.resolve();
  private broken: SealError | null = null;
  // Nonces: a random prefix per open and a counter, so no nonce repeats even
  // when the host rolls us back and the same sequence numbers are sealed again.
  private readonly noncePrefix = randomBytes(gcmNonceBytes - 4);
  private nonceCounter = 0;

  private constructor(private readonly blobs: BlobClient, private readonly keys: SealKeys, rec: Recovered) {
    this.lastSeq = rec.lastSeq;
    this.durableSeq = rec.lastSeq;
    this.lastTag = rec.lastTag;
    this.snapshotSeq = rec.snapshotSeq;
    this.segments = rec.segments;
    this.snapshotNames = rec.snapshotNames;
  }

  /** Recovers the sealed state (throws SealError on any tampering) and returns a store that appends after it. */
  static async open(init: SealedStoreInit): Promise<{ store: SealedStore; recovered: RecoveredState }> {
    const keys = deriveSealKeys(init.dataKey, init.nodeId);
    const rec = await recoverLog(init.blobs, keys);
    // Leftovers of an interrupted compaction: genuine but no longer needed.
    for (const name of rec.obsolete) await init.blobs.delete(name);
    const store = new SealedStore(init.blobs, keys, rec);
    const { snapshot, snapshotSeq, records, lastSeq } = rec;
    return { store, recovered: { snapshot, snapshotSeq, records, lastSeq } };
  }

  /** Seals and queues one record; resolves once it is durable on the host. Returns its sequence number. */
  append(record: Uint8Array): Promise<number> {
    if (this.broken !== null) return Promise.reject(this.broken);
    if (record.length > recordBytesMax) return Promise.reject(new RangeError(`record of ${record.length} bytes exceeds ${recordBytesMax}`));
    m.sealAppends.inc();
    const seq = this.lastSeq + 1;
    const sealed = sealRecord(this.keys.wal, this.keys.nodeTag, seq, this.lastTag, this.nextNonce(), record);
    this.lastSeq = seq;
    this.lastTag = sealed.tag;
    const batch = this.batchFor(seq, sealed.bytes.length);
    batch.records.push(sealed.bytes);
    batch.bytes += sealed.bytes.length;
    batch.lastSeq = seq;
    const done = new Promise<number>((resolve, reject) => batch.waiters.push({ resolve: () => resolve(seq), reject }));
    this.kick();
    return done;
  }

  /** Resolves when every record appended so far is durable. */
  async flush(): Promise<void> {
    while (this.flushing !== null) await this.flushing;
    if (this.broken !== null) throw this.broken;
  }

  /**
   * Seals `state` as the snapshot at the current sequence number (the caller
   * passes the state that reflects every record appended so far), then deletes
   * the segments and snapshots it replaces.
   */
  writeSnapshot(state: Uint8Array): Promise<void> {
    if (this.broken !== null) return Promise.reject(this.broken);
    const seq = this.lastSeq;
    // Same sequence, same state: rewriting would overwrite the current snapshot's chunks in place,
    // and a crash in the middle would leave no complete snapshot at all.
    if (seq === this.snapshotSeq && this.snapshotNames.length > 0) return this.snapshotting;
    const chunks = sealSnapshot(this.keys.snapshot, this.keys.nodeTag, seq, this.lastTag, state);
    const run = this.snapshotting.then(() => this.storeSnapshot(seq, chunks)).then(
      () => m.sealSnapshots.inc({ result: 'ok' }),
      (err: unknown) => {
        m.sealSnapshots.inc({ result: 'error' });
        m.sealErrors.inc({ kind: 'snapshot' });
        throw err;
      },
    );
    this.snapshotting = run.catch(() => undefined);
    return run;
  }

  /** False once a segment write failed: appends are refused until resync() succeeds. */
  get healthy(): boolean {
    return this.broken === null;
  }

  /**
   * Makes a store that a failed blob write broke usable again, without losing anything durable:
   * seals `state` (the caller's whole state: everything that was durable, plus anything it wants
   * kept from the writes that failed) as a snapshot at the current sequence number, after every
   * record sealed so far. The failed records' sequence numbers are thereby covered: whether or not
   * their segment reached the host's disk (a write can land and its answer be lost, or land late),
   * recovery skips them, and new records continue the chain after them. Throws (and stays broken)
   * while the host still fails. A store that is not broken is left as it is.
   */
  async resync(state: Uint8Array): Promise<void> {
    if (this.broken?.code === 'SEAL_CLOSED') throw this.broken;
    while (this.flushing !== null) await this.flushing;
    await this.snapshotting;
    if (this.broken === null) return;
    // Each attempt takes a sequence number of its own (a record sealed but never written, covered by
    // the snapshot), so that an earlier attempt's chunks landing late can never pass for this one.
    const seq = this.lastSeq + 1;
    this.lastTag = sealRecord(this.keys.wal, this.keys.nodeTag, seq, this.lastTag, this.nextNonce(), new Uint8Array(0)).tag;
    this.lastSeq = seq;
    const chunks = sealSnapshot(this.keys.snapshot, this.keys.nodeTag, seq, this.lastTag, state);
    try {
      for (let i = 0; i < chunks.length; i++) await this.blobs.put(snapshotChunkName(seq, i), chunks[i]!);
    } catch (err) {
      m.sealErrors.inc({ kind: 'resync' });
      throw err instanceof SealError ? err : new SealError('SEAL_IO', 'snapshot write failed', { cause: err });
    }
    const replacedNames = this.snapshotNames;
    const dropped = this.segments;
    this.snapshotNames = chunks.map((_, i) => snapshotChunkName(seq, i));
    this.snapshotSeq = seq;
    this.durableSeq = seq;
    this.segments = [];
    this.broken = null;
    // Best effort: what the snapshot replaces is obsolete (recovery skips it), so a failed delete costs only space.
    try {
      for (const name of replacedNames) if (!this.snapshotNames.includes(name)) await this.blobs.delete(name);
      for (const seg of dropped) await this.blobs.delete(seg.name);
    } catch {
      // Left for the next compaction or recovery (obsolete blobs are deleted on open).
    }
  }

  /** Throws SEAL_ROLLBACK if the recovered state is older than `minSeq` (what the ring knows was acknowledged). */
  static assertNotRolledBack(recovered: RecoveredState, minSeq: number): void {
    if (recovered.lastSeq < minSeq) {
      throw new SealError('SEAL_ROLLBACK', `recovered sequence ${recovered.lastSeq} is older than ${minSeq}`);
    }
  }

  stats(): SealedStoreStats {
    return {
      lastSeq: this.lastSeq,
      durableSeq: this.durableSeq,
      snapshotSeq: this.snapshotSeq,
      segments: this.segments.length,
      recordsSinceSnapshot: this.lastSeq - this.snapshotSeq,
    };
  }

  /** Waits for pending writes, then refuses further ones. The blob client is the caller's to close. */
  async close(): Promise<void> {
    await this.flush().catch(() => undefined);
    await this.snapshotting;
    this.broken ??= new SealError('SEAL_CLOSED', 'sealed store closed');
    this.keys.wal.fill(0);
    this.keys.snapshot.fill(0);
  }

  private nextNonce(): Buffer {
    if (this.nonceCounter === 0xffff_ffff) {
      this.noncePrefix.set(randomBytes(this.noncePrefix.length));
      this.nonceCounter = 0;
    }
    const nonce = Buffer.allocUnsafe(gcmNonceBytes);
    this.noncePrefix.copy(nonce, 0);
    nonce.writeUInt32BE(this.nonceCounter++, this.noncePrefix.length);
    return nonce;
  }

  /** The open batch, or a new one when the record would overflow a segment or the open one is being written. */
  private batchFor(seq: number, recordBytes: number): Batch {
    const last = this.queue[this.queue.length - 1];
    const inFlight = last !== undefined && last === this.queue[0] && this.headInFlight;
    const fits = last !== undefined && last.bytes + recordBytes <= segmentBytesMax && last.records.length < segmentRecordsMax;
    if (last !== undefined && fits && !inFlight) return last;
    const batch: Batch = { firstSeq: seq, lastSeq: seq, records: [], bytes: segmentHeaderBytes, waiters: [] };
    this.queue.push(batch);
    return batch;
  }

  private headInFlight = false;

  private kick(): void {
    if (this.flushing !== null) return;
    // setImmediate first: every append made in the same turn joins the first segment.
    this.flushing = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.drain())
      .finally(() => {
        this.flushing = null;
        // Appends made by callers woken at the very end of drain.
        if (this.queue.length > 0 && this.broken === null) this.kick();
      });
  }

  /** Writes queued batches one at a time, in order: segment n+1 is never on disk without segment n. */
  private async drain(): Promise<void> {
    for (;;) {
      const batch = this.queue[0];
      if (batch === undefined) return;
      this.headInFlight = true;
      const name = segmentName(batch.firstSeq);
      const started = process.hrtime.bigint();
      try {
        if (this.broken !== null) throw this.broken;
        await this.blobs.put(name, encodeSegment(this.keys.nodeTag, batch.records));
        m.sealWrites.inc({ result: 'ok' });
        m.sealWriteSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9);
      } catch (err) {
        m.sealWrites.inc({ result: 'error' });
        m.sealErrors.inc({ kind: 'segment' });
        this.broken ??= err instanceof SealError ? err : new SealError('SEAL_IO', 'segment write failed', { cause: err });
        this.headInFlight = false;
        for (const b of this.queue.splice(0)) for (const w of b.waiters) w.reject(this.broken);
        return;
      }
      this.queue.shift();
      this.headInFlight = false;
      this.segments.push({ name, firstSeq: batch.firstSeq, lastSeq: batch.lastSeq });
      this.durableSeq = batch.lastSeq;
      for (const w of batch.waiters) w.resolve();
    }
  }

  private async storeSnapshot(seq: number, chunks: Buffer[]): Promise<void> {
    // The snapshot names a chain position; the segments up to it must be durable first.
    while (this.durableSeq < seq) await this.flush();
    for (let i = 0; i < chunks.length; i++) await this.blobs.put(snapshotChunkName(seq, i), chunks[i]!);
    const replacedNames = this.snapshotNames;
    this.snapshotNames = chunks.map((_, i) => snapshotChunkName(seq, i));
    this.snapshotSeq = seq;
    // Only now is it safe to drop what the snapshot replaces: segments wholly at or before seq.
    const dropped = this.segments.filter((s) => s.lastSeq <= seq);
    this.segments = this.segments.filter((s) => s.lastSeq > seq);
    for (const name of replacedNames) if (!this.snapshotNames.includes(name)) await this.blobs.delete(name);
    for (const s of dropped) await this.blobs.delete(s.name);
  }
}
