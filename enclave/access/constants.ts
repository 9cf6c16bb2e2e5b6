/**
 * Limits and timings of the enclave's access-control service (issue 7).
 *
 * Leases: a node that serves keys of a namespace holds a copy of the
 * namespace's ACL (and of the groups it names) under a lease from the node
 * that owns the ACL's reserved key. The owner tells every holder about a
 * change before acknowledging it; a holder it cannot reach is waited out.
 */

/** How long a lease lasts, measured by the OWNER from when it granted it. */
export const leaseMs = 3000;
/**
 * The holder measures its lease from when it SENT the request (before the
 * grant) and shortens it by this fraction, to cover its clock running up to
 * 5% slower than the owner's over one lease.
 */
export const leaseDriftFraction = 0.05;
/** Extra time the owner waits beyond a holder's lease before taking it as expired. */
export const leaseMarginMs = 100;
/** A holder refreshes in the background once less than this fraction of its lease remains. */
export const leaseRefreshFraction = 0.5;
/**
 * A node that has just become the owner of some reserved keys (it started
 * serving, or its predecessor changed) accepts no update for this long: leases
 * the previous owner granted may still run, and it does not know their holders.
 */
export const takeoverWaitMs = leaseMs + 2 * leaseMarginMs;

/** How long the owner waits for a holder to confirm a change before waiting out its lease instead. */
export const pushTimeoutMs = 1000;
/** A lease request, and an owner operation forwarded by the node a client reached. */
export const leaseRequestTimeoutMs = 2000;
/** The node a client reached retries finding the owner until this deadline. */
export const ownerOpDeadlineMs = 8000;

/** Documents (ACLs + groups) one node keeps leases, floors and owner state for. */
export const docsTrackedMax = 200_000;
/** Lease holders recorded per document: at most one per ring member. */
export const holdersPerDocMax = 1024;
/** Principal objects cached by the hot path (binary form -> parsed). */
export const principalCacheMax = 4096;

// Relations the design relies on.
if (takeoverWaitMs <= leaseMs) throw new Error('takeoverWaitMs must exceed leaseMs');
if (pushTimeoutMs >= leaseMs) throw new Error('pushTimeoutMs must be shorter than a lease');
