// Limits of the ring core, qualifier last. Every list or string that a peer can
// send is checked against one of these before it is used.

/** Identifiers are 256-bit (SHA-256), so a finger table has at most this many entries. */
export const idBits = 256;
/** Bytes of an identifier when it travels as a byte string (big-endian). */
export const idBytes = 32;
/** Longest successor list a config may ask for, and the longest one accepted from a peer. */
export const successorsMax = 64;
/** Longest peer address (an opaque string chosen by the transport). */
export const addrCharsMax = 256;
/** A lookup that has been forwarded this many times is abandoned (a loop, or a hostile peer). */
export const hopsMax = 64;
/** Longest exclusion list an iterative lookup step may carry. */
export const excludeMax = 32;
/** Request ids are non-negative safe integers. */
export const requestIdMax = Number.MAX_SAFE_INTEGER;
/** Concurrent lookups a node keeps track of (user + maintenance); more are refused. */
export const lookupsInflightMax = 4096;
/** Peers whose unanswered requests are being counted; past this the counts start over. */
export const missesTrackedMax = 4096;
/** Forwards awaiting an acknowledgement; beyond this, new forwards are dropped. */
export const forwardsInflightMax = 16384;

// Relations between the limits, checked at load (a programmer error crashes here).
if (!(hopsMax >= 2 * idBits / 16)) throw new Error('hopsMax too small for a 2^256 ring');
if (!(successorsMax >= 1 && successorsMax <= 1024)) throw new Error('successorsMax out of range');
if (!(excludeMax >= successorsMax / 2)) throw new Error('excludeMax must cover a run of dead successors');

/**
 * A node known to be gone (it left, or its address now answers with another identity) is kept out of
 * successor lists and the predecessor slot for this many ticks, so that neighbours' stale lists do not
 * bring it back while the news spreads.
 */
export const deadTicks = 200;
/** Ids remembered as dead at once. */
export const deadTrackedMax = 4096;
