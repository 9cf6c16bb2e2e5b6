// Limits and lifetimes of the emulated Nitro TEE (CA, NSM, launcher).
// Values follow what genuine Nitro documents and AWS's NSM driver show, so
// code tested against the emulator meets the same bounds on real hardware.
import assert from 'node:assert/strict';

const second = 1000;
const minute = 60 * second;
const hour = 60 * minute;
const day = 24 * hour;

// Certificate lifetimes seen in real cabundles: root 30 years, regional about
// 20 days, zonal about 6 days, instance CA 1 day, leaf 3 hours whose
// notBefore is 3 s before issue.
export const rootLifetimeMs = 30 * 365 * day;
export const regionalLifetimeMs = 20 * day;
export const zonalLifetimeMs = 6 * day;
export const instanceLifetimeMs = day;
export const leafLifetimeMs = 3 * hour;
export const leafBackdateMs = 3 * second;
// Intermediates are backdated a little so a verifier with a slow clock accepts
// a freshly issued chain.
export const caBackdateMs = 5 * minute;

// A leaf signs documents for a while (AWS reuses leaves too, so a fresh
// document may have well under 3 h left); it is replaced once less than this
// remains, which leaves clients at least two hours per verified document.
export const leafRemainingMinMs = 2 * hour;

// The NSM accepts at most 1024 bytes per optional field (genuine documents
// carry exactly 1024), and the driver's request and response buffers are
// 0x1000 and 0x3000 bytes.
export const nsmFieldBytesMax = 1024;
export const nsmRequestBytesMax = 0x1000;
export const nsmResponseBytesMax = 0x3000;
// Requests a client may pipeline on the NSM channel before the server stops
// reading (backpressure, not an error).
export const nsmPendingMax = 64;

// Nitro reports 16 PCRs of SHA-384 size.
export const pcrCount = 16;
export const pcrBytes = 48;

// Launcher: grace between SIGTERM and SIGKILL, and the longest enclave log
// line forwarded whole (longer lines are cut, never buffered unbounded).
export const stopGraceMs = 5 * second;
export const logLineBytesMax = 64 * 1024;

assert.ok(leafRemainingMinMs < leafLifetimeMs);
assert.ok(leafLifetimeMs < instanceLifetimeMs && instanceLifetimeMs < zonalLifetimeMs);
assert.ok(zonalLifetimeMs < regionalLifetimeMs && regionalLifetimeMs < rootLifetimeMs);
assert.ok(3 * (nsmFieldBytesMax + 16) + 64 <= nsmRequestBytesMax);
