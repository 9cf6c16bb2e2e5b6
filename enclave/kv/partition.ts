/**
 * One node's share of the key space, in memory: bytes to bytes with a
 * per-key version. Deletes leave a tombstone (value null) carrying their
 * version, so that a replica holding an older write cannot resurrect the key.
 */

export interface Entry {
  value: Buffer | null;
  version: number;
}

export interface StoredEntry extends Entry {
  key: Buffer;
  /** This partition's modification sequence number of the entry (for incremental replica sync). */
  mseq: number;
}

interface Slot extends Entry {
  mseq: number;
}

export class Partition {
  private readonly map = new Map<string, Slot>();
  private live = 0;
  private liveBytes = 0;
  private seq = 0;

  /** The modification sequence number of the latest change. */
  get mseq(): number {
    return this.seq;
  }

  get size(): number {
    return this.live;
  }

  /** Bytes of the live entries' keys and values (tombstones not counted). */
  get bytes(): number {
    return this.liveBytes;
  }

  get(key: Buffer): Entry | undefined {
    return this.map.get(key.toString('latin1'));
  }

  /** The owner's write: the next version of the key. */
  put(key: Buffer, value: Buffer | null): Entry {
    const k = key.toString('latin1');
    const prev = this.map.get(k);
    const entry = { value, version: (prev?.version ?? 0) + 1 };
    this.set(k, prev, entry);
    return entry;
  }

  /** A replicated or handed-off entry: kept only if newer than what we hold. */
  apply(key: Buffer, entry: Entry): boolean {
    const k = key.toString('latin1');
    const prev = this.map.get(k);
    if (prev && prev.version >= entry.version) return false;
    this.set(k, prev, entry);
    return true;
  }

  remove(key: Buffer): void {
    const k = key.toString('latin1');
    const prev = this.map.get(k);
    if (!prev) return;
    if (prev.value !== null) {
      this.live--;
      this.liveBytes -= key.length + prev.value.length;
    }
    this.map.delete(k);
  }

  *entries(): IterableIterator<StoredEntry> {
    for (const [k, e] of this.map) yield { key: Buffer.from(k, 'latin1'), value: e.value, version: e.version, mseq: e.mseq };
  }

  private set(k: string, prev: Entry | undefined, entry: Entry): void {
    if (prev?.value != null) {
      this.live--;
      this.liveBytes -= k.length + prev.value.length;
    }
    if (entry.value !== null) {
      this.live++;
      this.liveBytes += k.length + entry.value.length;
    }
    this.map.set(k, { value: entry.value, version: entry.version, mseq: ++this.seq });
  }
}

