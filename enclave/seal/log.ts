/**
 * The sealed store: a write-ahead log of opaque records plus snapshots, kept by
 * the untrusted host as blobs. The caller (the KV partition) owns the meaning of
 * records and snapshots; this module owns confidentiality, integrity, order and
 * durability (see enclave/seal/README.md for what is and is not protected).
 *
 * Appends are group-committed (docs/durability.md T1-T6): a record is sealed at once (so the hash chain
 * advances synchronously); the records sealed in one turn of the event loop go out at its end as one
 * `append` to the current segment file, without waiting for earlier appends (pipelined); the host writes
 * the appends it has queued with one write and one fdatasync. `append` resolves when the request holding
 * the record and every earlier one were answered (durable).
 */
import { m } from '../metrics.ts';
import { randomBytes } from 'node:crypto';
import type { BlobClient } from './blob-client.ts';
import { appendHeaderBytes, gcmNonceBytes, recordBytesMax, segmentBytesMax } from './constants.ts';
import { SealError } from './errors.ts';
import { deriveSealKeys, type SealKeys } from './keys.ts';
import { appendSegmentHeader, sealAppendRecord, sealRecord, segmentName } from './record.ts';
import { recoverLog, type Recovered, type SegmentInfo } from './recover.ts';
import { sealSnapshot, sealSnapshotSlices, snapshotChunkName } from './snapshot.ts';

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
  /** Bytes of a torn tail cut off the newest segment at open (docs/durability.md T3), 0 if none. */
  tornBytes: number;
  /** Append requests sent and not yet answered. */
  appendsInFlight: number;
}

/** Append requests out at once; later turns' records wait for an answer and then go out as one request. */
export const appendsInFlightMax = 4;

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/** The records sealed in this turn, not yet sent. */
interface Turn {
  firstSeq: number;
  records: Buffer[];
  waiters: Waiter[];
}

/** One append request out at the host. */
interface Appending {
  name: string;
  firstSeq: number;
  lastSeq: number;
  waiters: Waiter[];
  answered: boolean;
  started: bigint;
}

/** A position of the log (SealedStore.snapshotPoint): the newest record sealed then, and its chain tag. */
export interface SnapshotPoint {
  readonly seq: number;
  readonly tag: Buffer;
}

/** The next event-loop turn (setImmediate): where sliced work lets other work run. */
export const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class SealedStore {
  private lastSeq: number;
  private lastTag: Buffer;
  private durableSeq: number;
  private snapshotSeq: number;
  private segments: SegmentInfo[];
  private snapshotNames: string[];
  /** The segment file appends go to (null: the next append creates one, T6), and its size. */
  private current: { name: string; firstSeq: number; bytes: number } | null = null;
  private turn: Turn | null = null;
  private readonly appending: Appending[] = [];
  private readonly durableWaiters: Array<{ seq: number; wake: () => void }> = [];
  private tornBytes = 0;
  private snapshotting: Promise<void> = Promise.resolve();
  private broken: SealError | null = null;
  private closed = false;
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
    // T3: a torn tail is cut off for good before anything is appended after it (one atomic put).
    if (rec.torn !== null) {
      if (rec.torn.keep === null) await init.blobs.delete(rec.torn.name);
      else await init.blobs.put(rec.torn.name, rec.torn.keep);
    }
    const store = new SealedStore(init.blobs, keys, rec);
    store.tornBytes = rec.torn?.cutBytes ?? 0;
    const { snapshot, snapshotSeq, records, lastSeq } = rec;
    return { store, recovered: { snapshot, snapshotSeq, records, lastSeq } };
  }

  /** Seals and queues one record; resolves once it is durable on the host. Returns its sequence number. */
  append(record: Uint8Array): Promise<number> {
    if (this.broken !== null) return Promise.reject(this.broken);
    if (record.length > recordBytesMax) return Promise.reject(new RangeError(`record of ${record.length} bytes exceeds ${recordBytesMax}`));
    m.sealAppends.inc();
    const seq = this.lastSeq + 1;
    const sealed = sealAppendRecord(this.keys, this.keys.nodeTag, seq, this.lastTag, this.nextNonce(), record);
    this.lastSeq = seq;
    this.lastTag = sealed.tag;
    if (this.turn === null) {
      this.turn = { firstSeq: seq, records: [], waiters: [] };
      // The end of this turn: every append made until then goes out in the same request.
      setImmediate(() => this.sendTurn());
    }
    const turn = this.turn;
    turn.records.push(sealed.bytes);
    return new Promise<number>((resolve, reject) => turn.waiters.push({ resolve: () => resolve(seq), reject }));
  }

  /** Resolves when every record appended so far is durable; throws if the store is broken. */
  async flush(): Promise<void> {
    await this.durable(this.lastSeq);
    if (this.broken !== null) throw this.broken;
  }

  /** Resolves once `seq` is durable, or the store broke. */
  private durable(seq: number): Promise<void> {
    if (this.durableSeq >= seq || this.broken !== null) return Promise.resolve();
    return new Promise((wake) => this.durableWaiters.push({ seq, wake }));
  }

  private wakeDurable(): void {
    for (let i = this.durableWaiters.length - 1; i >= 0; i--) {
      const w = this.durableWaiters[i]!;
      if (this.durableSeq >= w.seq || this.broken !== null) {
        this.durableWaiters.splice(i, 1);
        w.wake();
      }
    }
  }

  /**
   * Sends this turn's records: one append request per segment they go to (T6 cuts segments at one blob). With
   * `appendsInFlightMax` requests out already, the records wait for the next answer and go out together then
   * (the host would write them in one group anyway; fewer, larger requests cost less on both sides).
   */
  private sendTurn(): void {
    const turn = this.turn;
    if (turn === null) return;
    if (this.broken === null && this.appending.length >= appendsInFlightMax) return; // sent by onAppended
    this.turn = null;
    if (this.broken !== null) {
      for (const w of turn.waiters) w.reject(this.broken);
      return;
    }
    let i = 0;
    let seq = turn.firstSeq;
    while (i < turn.records.length) {
      const parts: Buffer[] = [];
      let create = false;
      if (this.current === null || this.current.bytes + turn.records[i]!.length > segmentBytesMax) {
        // T6 cut (review-11 F1, review-12 F2: found by both): the next segment is created only once every append to the current one was
        // answered. The host poisons only the file whose write failed (T2); a create pipelined behind a failed
        // append names another file and would be written, leaving a hole followed by later records (SEAL_GAP
        // at open after a crash). The rest of the turn waits for the answers (onAppended sends it).
        if (this.appending.length > 0) {
          this.turn = { firstSeq: seq, records: turn.records.slice(i), waiters: turn.waiters.slice(i) };
          return;
        }
        this.current = { name: segmentName(seq), firstSeq: seq, bytes: appendHeaderBytes };
        parts.push(appendSegmentHeader(this.keys.nodeTag, seq));
        create = true;
      }
      const cur = this.current;
      const from = i;
      // A maximal record fits in an empty segment (constants.ts), so every request carries at least one.
      while (i < turn.records.length && (i === from || cur.bytes + turn.records[i]!.length <= segmentBytesMax)) {
        cur.bytes += turn.records[i]!.length;
        parts.push(turn.records[i]!);
        i++;
      }
      const req: Appending = {
        name: cur.name, firstSeq: seq, lastSeq: seq + (i - from) - 1, waiters: turn.waiters.slice(from, i), answered: false,
        started: process.hrtime.bigint(),
      };
      seq = req.lastSeq + 1;
      this.appending.push(req);
      this.blobs.append(cur.name, parts.length === 1 ? parts[0]! : Buffer.concat(parts), create).then(
        () => this.onAppended(req),
        (err: unknown) => this.onAppendFailed(req, err),
      );
    }
  }

  /** An append was answered: records are durable up to the first request still out (answers may not overtake). */
  private onAppended(req: Appending): void {
    req.answered = true;
    m.sealWrites.inc({ result: 'ok' });
    m.sealWriteSeconds.observe(Number(process.hrtime.bigint() - req.started) / 1e9);
    while (this.appending.length > 0 && this.appending[0]!.answered) {
      const done = this.appending.shift()!;
      const info = this.segments.find((x) => x.name === done.name);
      if (info !== undefined) info.lastSeq = done.lastSeq;
      else this.segments.push({ name: done.name, firstSeq: done.firstSeq, lastSeq: done.lastSeq });
      this.durableSeq = done.lastSeq;
      for (const w of done.waiters) w.resolve();
    }
    this.wakeDurable();
    if (this.turn !== null && this.appending.length < appendsInFlightMax) this.sendTurn();
  }

  /** T1: a failed append breaks the store; nothing after it is acknowledged until resync. */
  private onAppendFailed(req: Appending, err: unknown): void {
    if (!this.appending.includes(req)) return; // the store already broke on an earlier request
    m.sealWrites.inc({ result: 'error' });
    m.sealErrors.inc({ kind: 'segment' });
    this.broken ??= err instanceof SealError ? err : new SealError('SEAL_IO', 'segment write failed', { cause: err });
    for (const r of this.appending.splice(0)) for (const w of r.waiters) w.reject(this.broken);
    if (this.turn !== null) {
      for (const w of this.turn.waiters) w.reject(this.broken);
      this.turn = null;
    }
    this.wakeDurable();
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
    return this.queueSnapshot(this.snapshotting.then(() => this.storeSnapshot(seq, chunks)));
  }

  /**
   * The log's position now (the newest record sealed and its chain tag), for a snapshot whose state is taken now
   * and sealed later (writeSnapshotAt): S1 in docs/durability.md "Snapshots off the request path".
   */
  snapshotPoint(): SnapshotPoint {
    return { seq: this.lastSeq, tag: this.lastTag };
  }

  /**
   * Seals `state`, the caller's state as of `at` (taken when snapshotPoint() returned it: appends may have
   * continued since), as the snapshot at that position, a slice at a time (`turn` between slices: the event
   * loop serves other work meanwhile), then compacts as writeSnapshot does. A point at or before a snapshot
   * already stored (a newer one, a resync's) is skipped, never stored over it (S2).
   */
  writeSnapshotAt(at: SnapshotPoint, state: Uint8Array, turn: () => Promise<void> = nextTurn): Promise<void> {
    if (this.broken !== null) return Promise.reject(this.broken);
    if (at.seq === this.snapshotSeq && this.snapshotNames.length > 0) return this.snapshotting;
    if (at.seq < this.snapshotSeq) {
      m.sealSnapshots.inc({ result: 'superseded' });
      return Promise.resolve();
    }
    const sealed = (async (): Promise<Buffer[]> => {
      const steps = sealSnapshotSlices(this.keys.snapshot, this.keys.nodeTag, at.seq, at.tag, state);
      for (;;) {
        const r = steps.next();
        if (r.done === true) return r.value;
        await turn();
      }
    })();
    const before = this.snapshotting;
    // Stored after the snapshots asked for before it, and settled after them even when sealing fails (review-10
    // L1: resync() and close() wait on the queue's tail, which must not pass a store still running).
    return this.queueSnapshot(sealed.then(
      async (chunks) => {
        await before;
        return this.storeSnapshot(at.seq, chunks);
      },
      async (err: unknown) => {
        await before;
        throw err;
      },
    ));
  }

  private queueSnapshot(work: Promise<boolean>): Promise<void> {
    const run = work.then(
      (stored) => m.sealSnapshots.inc({ result: stored ? 'ok' : 'superseded' }),
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
    await this.durable(this.lastSeq);
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
    const dropped = this.segments.map((x) => x.name);
    // The segment the failed append went to may not be listed (its first append failed), and may hold a
    // torn or unanswered tail: it is covered by the snapshot, and never appended to again (T6).
    if (this.current !== null && !dropped.includes(this.current.name)) dropped.push(this.current.name);
    this.current = null;
    this.snapshotNames = chunks.map((_, i) => snapshotChunkName(seq, i));
    this.snapshotSeq = seq;
    this.durableSeq = seq;
    this.segments = [];
    // A close() that ran while this resync awaited the host zeroed the keys: the store stays closed (review-10 L2).
    if (this.closed) throw new SealError('SEAL_CLOSED', 'sealed store closed');
    this.broken = null;
    // Best effort: what the snapshot replaces is obsolete (recovery skips it), so a failed delete costs only space.
    try {
      for (const name of replacedNames) if (!this.snapshotNames.includes(name)) await this.blobs.delete(name);
      for (const name of dropped) await this.blobs.delete(name);
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
      tornBytes: this.tornBytes,
      appendsInFlight: this.appending.length,
    };
  }

  /** Waits for pending writes, then refuses further ones. The blob client is the caller's to close. */
  async close(): Promise<void> {
    await this.flush().catch(() => undefined);
    await this.snapshotting;
    this.closed = true;
    this.broken ??= new SealError('SEAL_CLOSED', 'sealed store closed');
    this.keys.wal.fill(0);
    this.keys.walHeader.fill(0);
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

  /** False when S2 drops it (a snapshot at or after its position is stored already). */
  private async storeSnapshot(seq: number, chunks: Buffer[]): Promise<boolean> {
    // The snapshot names a chain position; the segments up to it must be durable first.
    await this.durable(seq);
    if (this.broken !== null) throw this.broken;
    // S2: a snapshot sealed at an older position than one stored meanwhile (a resync's, a newer one) is
    // dropped: storing it would name the older position as the newest state, over segments already deleted.
    if (seq < this.snapshotSeq || (seq === this.snapshotSeq && this.snapshotNames.length > 0)) return false;
    for (let i = 0; i < chunks.length; i++) await this.blobs.put(snapshotChunkName(seq, i), chunks[i]!);
    const replacedNames = this.snapshotNames;
    this.snapshotNames = chunks.map((_, i) => snapshotChunkName(seq, i));
    this.snapshotSeq = seq;
    // Only now is it safe to drop what the snapshot replaces: segments wholly at or before seq, except the
    // one appends go to (T6: recovery skips its records at or before the snapshot), and any segment an append
    // request is still out to (review-10 F1: `lastSeq` counts answered appends only; a request sent to the
    // previous segment just before T6 cut a new one carries records after seq, which the host writes before it
    // serves our delete, and which are acknowledged when it answers).
    const keep = (x: SegmentInfo): boolean =>
      x.lastSeq > seq || x.name === this.current?.name || this.appending.some((a) => a.name === x.name);
    const dropped = this.segments.filter((x) => !keep(x));
    this.segments = this.segments.filter(keep);
    for (const name of replacedNames) if (!this.snapshotNames.includes(name)) await this.blobs.delete(name);
    for (const s of dropped) await this.blobs.delete(s.name);
    return true;
  }
}
