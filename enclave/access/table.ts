/**
 * What one node knows about each access document, in one table shared by its
 * two roles:
 * - holder (it serves data keys of a namespace): `known` under a lease until
 *   `leaseUntil`;
 * - owner (it owns the document's reserved key): `committed` (the version it
 *   last stored and replicated) and the lease holders it must tell of changes.
 * `known` is also the floor: the newest verified version this node has seen.
 * It only moves forward (adoptDoc refuses older copies), so a replayed or
 * rolled-back document is never used once a newer one reached this node.
 */
import { EkvError } from '../../protocol/errors.ts';
import type { GroupResolver, VerifiedGroup } from '../acl/index.ts';
import { docsTrackedMax, holdersPerDocMax } from './constants.ts';
import { docRef, type DocKind, type DocRef, type Verified } from './docs.ts';

/** A node holding a lease: `until` is the owner's clock (monotonic ms). */
export interface HolderRecord {
  /** Ring id, hex (the map key); `self` for this node. */
  readonly key: string;
  readonly nodeId: bigint | null;
  readonly addr: string;
  until: number;
}

export interface DocState {
  readonly ref: DocRef;
  known: Verified | null;
  /** Holder: `known` is current until then (monotonic ms, this node's clock); 0 = no lease. */
  leaseUntil: number;
  fetching: Promise<DocState> | null;
  /** Owner: undefined until loaded from the store since this node last became owner. */
  committed: Verified | null | undefined;
  readonly holders: Map<string, HolderRecord>;
  /** Owner: updates of this document run one at a time. */
  lock: Promise<unknown>;
}

export class DocTable implements GroupResolver {
  readonly #docs = new Map<string, DocState>();
  #generation = 0;

  constructor(private readonly now: () => number) {}

  /** GroupResolver: bumps whenever any group's known version changes (authorize caches on it). */
  get generation(): number {
    return this.#generation;
  }

  /** GroupResolver: the newest verified copy of a group (callers make sure its lease is valid first). */
  get(name: string): VerifiedGroup | undefined {
    const st = this.#docs.get(`group/${name}`);
    return (st?.known as VerifiedGroup | null | undefined) ?? undefined;
  }

  peek(id: string): DocState | undefined {
    return this.#docs.get(id);
  }

  state(kind: DocKind, name: string): DocState {
    const id = `${kind}/${name}`;
    const found = this.#docs.get(id);
    if (found) return found;
    if (this.#docs.size >= docsTrackedMax) this.#evict();
    const st: DocState = { ref: docRef(kind, name), known: null, leaseUntil: 0, fetching: null, committed: undefined, holders: new Map(), lock: Promise.resolve() };
    this.#docs.set(id, st);
    return st;
  }

  /** Raise `known` (never lower it: callers pass the result of adoptDoc). */
  setKnown(st: DocState, v: Verified): void {
    if (st.known === v) return;
    st.known = v;
    if (st.ref.kind === 'group') this.#generation++;
  }

  /** Ownership moved: forget what this node committed; it reloads from its store when it owns the key again. */
  forgetCommitted(): void {
    for (const st of this.#docs.values()) st.committed = undefined;
  }

  recordHolder(st: DocState, h: HolderRecord, now: number): void {
    if (!st.holders.has(h.key) && st.holders.size >= holdersPerDocMax) {
      for (const [k, old] of st.holders) if (old.until <= now) st.holders.delete(k);
      if (st.holders.size >= holdersPerDocMax) throw new EkvError('UNAVAILABLE', 'too many lease holders');
    }
    st.holders.set(h.key, h);
  }

  /**
   * Full table: drop the oldest document with no lease, no holder and no
   * owner state. Its floor goes with it; documented (docsTrackedMax is large).
   */
  #evict(): void {
    const now = this.now();
    for (const [id, st] of this.#docs) {
      const holding = [...st.holders.values()].some((h) => h.until > now);
      if (st.leaseUntil <= now && !holding && st.committed === undefined && st.fetching === null) {
        this.#docs.delete(id);
        return;
      }
    }
    throw new EkvError('UNAVAILABLE', 'access document table full');
  }
}
