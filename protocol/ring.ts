/**
 * A ring's (deployment's) credential, derived from its 32-byte ring secret (docs/membership.md):
 * - the ring id, public, carried in the server's signed handshake core so clients can pin it;
 * - the MAC key, with which both sides of a peer handshake prove they hold the secret.
 * The secret itself comes from KMS (enclave/seal/ring-secret.ts) and never leaves the enclave.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';

export const ringSecretBytes = 32;
export const ringIdBytes = 32;
export const ringMacBytes = 32;
/** Previous ring ids a reopened ring names in its handshake (docs/recovery.md), newest first. */
export const previousRingIdsMax = 8;

export interface RingCredential {
  /** HKDF(secret, "ekv ring id"): names the ring; not secret. */
  id: Buffer;
  /** HKDF(secret, "ekv ring mac"): proves membership in peer handshakes. */
  macKey: Buffer;
  /**
   * A ring reopened by its recovery members (docs/recovery.md): `id` is then the reopened ring's, these are
   * the ids it had before (newest first) and `generation` how many times it was reopened.
   */
  previous?: Buffer[];
  generation?: number;
}

export function ringCredential(secret: Uint8Array): RingCredential {
  if (secret.length !== ringSecretBytes) throw new RangeError(`ring secret must be ${ringSecretBytes} bytes`);
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), Buffer.from(info), 32));
  return { id: derive('ekv ring id'), macKey: derive('ekv ring mac') };
}

export function ringMac(macKey: Buffer, label: Buffer, transcript: Buffer): Buffer {
  return createHmac('sha256', macKey).update(label).update(transcript).digest();
}

export function ringMacValid(macKey: Buffer, label: Buffer, transcript: Buffer, mac: Uint8Array | null): boolean {
  if (mac === null || mac.length !== ringMacBytes) return false;
  return timingSafeEqual(ringMac(macKey, label, transcript), mac);
}

/**
 * The peer hello's proof (docs/membership.md "Peer hellos"): HMAC(MAC key, label || nonce || ephemeral key ||
 * sent-at ms, 8 bytes big-endian). Checked before admission, so a hello claiming 'peer' without the secret
 * cannot take a peer-reserved handshake slot; the nonce and time let the accepting side refuse replays.
 */
export const ringHelloLabel = Buffer.from('ekv/1 ring hello');

export function ringHelloMac(macKey: Buffer, nonce: Uint8Array, eph: Uint8Array, sentAtMs: number): Buffer {
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64BE(BigInt(sentAtMs));
  return createHmac('sha256', macKey).update(ringHelloLabel).update(nonce).update(eph).update(ts).digest();
}

export function ringHelloMacValid(macKey: Buffer, nonce: Uint8Array, eph: Uint8Array, sentAtMs: number, mac: Uint8Array | null): boolean {
  if (mac === null || mac.length !== ringMacBytes || !Number.isSafeInteger(sentAtMs) || sentAtMs < 0) return false;
  return timingSafeEqual(ringHelloMac(macKey, nonce, eph, sentAtMs), mac);
}
