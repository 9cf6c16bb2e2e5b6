/**
 * The owner side: the node that owns a document's reserved key orders its
 * changes, grants leases on it, and before acknowledging a change tells every
 * lease holder (or waits out the lease of one it cannot reach).
 *
 * An update, under the document's lock:
 *   1. wait until this node may order updates (takeover rule below);
 *   2. compare-and-set against the committed version (applyDocUpdate);
 *   3. store it under the reserved key through the ring store, which applies
 *      it here and on the R-1 replicas before answering;
 *   4. make it `committed` and `known` here (new leases now carry it);
 *   5. push it to every holder whose lease may still run, and wait for each
 *      to confirm, or for its lease (+ margin) to end;
 *   6. acknowledge.
 * So once a change is acknowledged, no node can still be serving under an
 * older version, and no replica lacks it (unless it was unreachable, which the
 * ring treats as dead).
 *
 * Takeover: a node that starts serving, or whose predecessor changes, may
 * have inherited documents whose previous owner granted leases it does not
 * know about. It refuses to order updates until takeoverWaitMs (> one lease)
 * has passed, by which time every such lease has ended.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { encodeSignedDoc } from '../../protocol/acl-doc.ts';
import { EkvError } from '../../protocol/errors.ts';
import { leaseMarginMs, leaseMs, pushTimeoutMs, takeoverWaitMs } from './constants.ts';
import { adoptDoc, type Verified } from './docs.ts';
import type { DocState, DocTable, HolderRecord } from './table.ts';

export interface OwnerStore {
  /** This node is the active owner of the key's range. */
  owns(key: Buffer): boolean;
  readonly serving: boolean;
  /** The key's acknowledged value here, as its owner (null: none). */
  read(key: Buffer): Buffer | null;
  /** Store `bytes` under the reserved key, replicated; only if this node owns the key (no forwarding). */
  persist(key: Buffer, bytes: Buffer): Promise<void>;
}

export type Push = (h: HolderRecord, st: DocState, bytes: Buffer) => Promise<void>;

export class DocOwner {
  /** Monotonic ms before which this node orders no update. */
  private readyAt: number;
  private servingSeen: boolean;

  constructor(
    private readonly c: {
      table: DocTable;
      store: OwnerStore;
      now: () => number;
      push: Push;
      logger: Logger;
    },
  ) {
    this.readyAt = c.now() + takeoverWaitMs;
    this.servingSeen = c.store.serving;
  }

  /** The ring changed who owns what (predecessor changed, or this node started serving). */
  ownershipChanged(): void {
    this.readyAt = Math.max(this.readyAt, this.c.now() + takeoverWaitMs);
    this.c.table.forgetCommitted();
  }

  /** Polled: the store's `serving` flips once, when a joining node has its keys. */
  observeServing(): void {
    if (this.servingSeen || !this.c.store.serving) return;
    this.servingSeen = true;
    this.ownershipChanged();
  }

  /** The committed version (null: none), loading it from the local store after a takeover. Throws UNAVAILABLE if not the owner. */
  committed(st: DocState): Verified | null {
    this.observeServing();
    if (!this.c.store.serving || !this.c.store.owns(st.ref.key)) {
      throw new EkvError('UNAVAILABLE', 'not the owner of this document (the ring is changing)');
    }
    if (st.committed !== undefined) return st.committed;
    const stored = this.c.store.read(st.ref.key);
    let v = st.known;
    if (stored) {
      try {
        v = adoptDoc(st.ref, st.known, stored);
      } catch (err) {
        // Our floor is newer than the stored copy: a replica missed a change that was acknowledged
        // (pushes happen only after the store answered). Keep the floor, and write it back.
        if ((err as { code?: string }).code !== 'STALE_VERSION') throw new EkvError('INTERNAL', `stored ${st.ref.id} refused: ${(err as Error).message}`);
      }
    }
    if (v !== null) this.c.table.setKnown(st, v);
    st.committed = v;
    if (v !== null && !(stored && stored.equals(encodedDoc(v)))) {
      void this.c.store.persist(st.ref.key, encodedDoc(v)).catch(() => undefined);
    }
    return v;
  }

  /** A lease: the committed version's bytes (null: none), and `h` recorded as a holder. */
  grant(st: DocState, h: Omit<HolderRecord, 'until'>): Buffer | null {
    const v = this.committed(st);
    const now = this.c.now();
    this.c.table.recordHolder(st, { ...h, until: now + leaseMs }, now);
    return v === null ? null : encodedDoc(v);
  }

  /** Runs `body` under the document's lock, once this node may order updates. */
  async update(st: DocState, body: (current: Verified | null) => Promise<Verified>): Promise<Verified> {
    this.committed(st); // not the owner: UNAVAILABLE now, before any wait (the caller looks the owner up again)
    const run = st.lock.then(async () => {
      await this.waitReady();
      const next = await body(this.committed(st));
      await this.commit(st, next);
      return next;
    });
    st.lock = run.catch(() => undefined);
    return run;
  }

  private async waitReady(): Promise<void> {
    for (;;) {
      this.observeServing();
      const wait = this.readyAt - this.c.now();
      if (wait <= 0 && this.c.store.serving) return;
      await sleep(Math.max(wait, 50));
    }
  }

  private async commit(st: DocState, next: Verified): Promise<void> {
    const bytes = encodedDoc(next);
    await this.c.store.persist(st.ref.key, bytes);
    st.committed = next;
    this.c.table.setKnown(st, next);
    await this.invalidate(st, bytes);
  }

  /** Every holder confirms the new version, or its lease ends; expired holders are forgotten. */
  private async invalidate(st: DocState, bytes: Buffer): Promise<void> {
    const now = this.c.now();
    const waits: Array<Promise<void>> = [];
    for (const h of [...st.holders.values()]) {
      const end = h.until + leaseMarginMs;
      if (end <= now) {
        st.holders.delete(h.key);
        continue;
      }
      waits.push(
        withTimeout(this.c.push(h, st, bytes), pushTimeoutMs).catch((err: unknown) => {
          // Review-15 F3: the document's kind only: the logs go to the host, and namespace/group names are not its to see.
          this.c.logger.info({ doc: st.ref.kind, holder: h.addr, err: (err as Error).message }, 'holder unreachable; waiting out its lease');
          return sleep(end - this.c.now());
        }),
      );
    }
    await Promise.all(waits);
  }
}

/** The signed document as stored and carried (body and signature as the client made them). */
const encodedCache = new WeakMap<Verified, Buffer>();
export function encodedDoc(v: Verified): Buffer {
  let b = encodedCache.get(v);
  if (b === undefined) {
    b = encodeSignedDoc(v.doc);
    encodedCache.set(v, b);
  }
  return b;
}


function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
