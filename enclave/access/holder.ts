/**
 * The holder side of leases: a node serving keys of a namespace keeps the
 * namespace's ACL (and the groups it names) under a lease from the owner of
 * the document's reserved key.
 *
 * Conservative clocks: the lease runs from when the request was SENT (before
 * the owner granted it), shortened by leaseDriftFraction, so it ends before
 * the owner's record of it even if this clock runs a little slow. A change
 * pushed by the owner (see owner.ts) is adopted at once; the owner waits for
 * that before acknowledging the change.
 */
import type { Logger } from 'pino';
import { leaseDriftFraction, leaseMs, leaseRefreshFraction } from './constants.ts';
import { adoptDoc, type DocKind, type DocRef } from './docs.ts';
import type { DocState, DocTable } from './table.ts';
import type { VerifiedAcl } from '../acl/index.ts';

/** Asks the document's owner for the current version and a lease: its signed bytes, or null when none exists. */
export type FetchLease = (ref: DocRef) => Promise<Uint8Array | null>;

const holderLeaseMs = Math.floor(leaseMs * (1 - leaseDriftFraction));
const refreshBeforeMs = Math.floor(holderLeaseMs * leaseRefreshFraction);

export class LeaseHolder {
  constructor(
    private readonly c: { table: DocTable; now: () => number; fetchLease: FetchLease; logger: Logger },
  ) {}

  /** True while the lease runs; past its middle, a refresh starts in the background. */
  usable(st: DocState): boolean {
    const left = st.leaseUntil - this.c.now();
    if (left <= 0) return false;
    if (left < refreshBeforeMs && st.fetching === null) void this.ensureFresh(st).catch(() => undefined);
    return true;
  }

  /** The ACL of `ns` and every group it names, each under a valid lease. Throws EkvError when an owner cannot be reached. */
  async acl(ns: string): Promise<VerifiedAcl | null> {
    const st = await this.ensure('acl', ns);
    const acl = st.known as VerifiedAcl | null;
    if (acl !== null) await this.groupsOf(acl);
    return acl;
  }

  /** Every group `acl` names, under valid leases. */
  async groupsOf(acl: VerifiedAcl): Promise<void> {
    await this.groupsNamed(acl.byGroup.keys());
  }

  /** These groups (at most an ACL's worth), under valid leases. */
  async groupsNamed(names: Iterable<string>): Promise<void> {
    const missing: Array<Promise<DocState>> = [];
    for (const name of names) {
      const st = this.c.table.state('group', name);
      if (!this.usable(st)) missing.push(this.ensureFresh(st));
    }
    await Promise.all(missing);
  }

  /** Sync fast path: the ACL of `ns` when it and its groups are under valid leases, else undefined. */
  cached(ns: string): VerifiedAcl | null | undefined {
    const st = this.c.table.peek(`acl/${ns}`);
    if (st === undefined || !this.usable(st)) return undefined;
    const acl = st.known as VerifiedAcl | null;
    if (acl === null) return null;
    for (const name of acl.byGroup.keys()) {
      const g = this.c.table.peek(`group/${name}`);
      if (g === undefined || !this.usable(g)) return undefined;
    }
    return acl;
  }

  async ensure(kind: DocKind, name: string): Promise<DocState> {
    const st = this.c.table.state(kind, name);
    return this.usable(st) ? st : this.ensureFresh(st);
  }

  /** A change the owner pushed: adopt it (monotonic), keep the lease. Throws AclError on a copy older than ours. */
  pushed(st: DocState, bytes: Uint8Array): void {
    this.c.table.setKnown(st, adoptDoc(st.ref, st.known, bytes));
  }

  private ensureFresh(st: DocState): Promise<DocState> {
    st.fetching ??= this.fetch(st).finally(() => (st.fetching = null));
    return st.fetching;
  }

  private async fetch(st: DocState): Promise<DocState> {
    const sentAt = this.c.now();
    const bytes = await this.c.fetchLease(st.ref);
    if (bytes !== null) {
      try {
        this.c.table.setKnown(st, adoptDoc(st.ref, st.known, bytes));
      } catch (err) {
        // Older than what we know: a push overtook this answer (the owner registered us before
        // committing the newer version, so it will tell us of any later change). A fork is not
        // possible between attested owners; refuse to serve on it rather than guess.
        if ((err as { code?: string }).code !== 'STALE_VERSION') throw err;
        // Review-15 F3: the document's kind only: the logs go to the host, and namespace/group names are not its to see.
        this.c.logger.debug({ doc: st.ref.kind }, 'lease answer older than a pushed version; keeping the newer');
      }
    }
    st.leaseUntil = Math.max(st.leaseUntil, sentAt + holderLeaseMs);
    return st;
  }
}
