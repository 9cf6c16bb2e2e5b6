/**
 * Limits of the wire protocol. Every length that comes off the wire is checked
 * against one of these before anything is allocated.
 */
export const keyBytesMax = 1024;
export const valueBytesMax = 512 * 1024;
/** A sealed frame: the largest request (key + value + CBOR overhead) plus the GCM tag. */
export const frameBytesMax = valueBytesMax + keyBytesMax + 4096;
/** Handshake messages carry an attestation document (about 5 KiB from real Nitro, at most 16 KiB). */
export const handshakeBytesMax = 24 * 1024;
export const attestationDocBytesMax = 16 * 1024;
export const nonceBytes = 32;
export const x25519KeyBytes = 32;
export const ed25519KeyBytes = 32;
export const ed25519SignatureBytes = 64;
export const gcmTagBytes = 16;
/** Keys ratchet forward every this many frames in each direction. */
export const rekeyFrames = 1 << 20;
/** A session is closed by the enclave after this long; the client then handshakes again. */
export const sessionLifetimeMs = 60 * 60 * 1000;
/** Requests a connection may have in flight before the enclave stops reading from it. */
export const inflightMax = 4096;
export const protocolVersion = 1;
/** A put's ttl (expiry, docs/consistency.md "Expiry"): whole milliseconds in [1, ttlMsMax] (366 days). */
export const ttlMsMax = 366 * 24 * 60 * 60 * 1000;

// Relations the code relies on.
if (frameBytesMax <= valueBytesMax + keyBytesMax) throw new Error('frameBytesMax too small');
if (handshakeBytesMax <= attestationDocBytesMax + 1024) throw new Error('handshakeBytesMax too small');
