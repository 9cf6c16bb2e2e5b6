/**
 * The client's trust policy: which roots, which PCRs, how old a document may
 * be. The default trusts only the AWS Nitro root; the emulator's root is
 * trusted only when a caller (or a cluster file) passes it explicitly.
 */
import { EkvError } from '../protocol/errors.ts';
import type { AttestedPeer, VerifyDoc } from '../protocol/handshake.ts';
import { AttestationError, verifyAttestation } from '../verifier/index.ts';

export interface TrustPolicy {
  /** PEM roots; omitted = the AWS Nitro root only. */
  roots?: string[];
  /** Expected PCRs by index, hex. Production clients should pin at least PCR0. */
  pcrs?: Record<string, string | string[]>;
  /** A document older than this is refused (default 5 minutes). */
  maxAgeMs?: number;
  allowDebug?: boolean;
  clockSkewMs?: number;
  /** The clock used to check certificates and ages (default Date.now). */
  now?: () => number;
  /**
   * Accept any enclave image (no PCR0 pin). Off by default: without a pin, any Nitro enclave (the
   * attacker's own image included) would pass, so the SDK refuses to connect unless PCR0 is pinned.
   */
  allowAnyImage?: boolean;
  /**
   * The deployment's ring id (64 hex digits; the cluster file written by `ekv up` pins it). A node whose
   * signed handshake names another ring (a node whose host wiped it and let it found a new ring, or an
   * enclave of the same image in another deployment) is refused with WRONG_RING.
   */
  ringId?: string;
}

/** A trust policy that pins nothing about the image is refused up front, not at the first request. */
export function checkTrustPolicy(policy: TrustPolicy): void {
  const pcr0 = policy.pcrs?.['0'];
  const pinned = typeof pcr0 === 'string' ? pcr0.length > 0 : Array.isArray(pcr0) && pcr0.length > 0;
  if (!pinned && policy.allowAnyImage !== true) {
    throw new EkvError('BAD_REQUEST', 'the trust policy pins no PCR0: give trust.pcrs[0] (the image measurement), or allowAnyImage: true');
  }
  if (policy.ringId !== undefined && !/^[0-9a-f]{64}$/.test(policy.ringId)) {
    throw new EkvError('BAD_REQUEST', 'trust.ringId must be 64 lowercase hex digits');
  }
}

export const defaultDocAgeMaxMs = 5 * 60 * 1000;

export function documentVerifier(policy: TrustPolicy): VerifyDoc {
  const pcrs: Record<number, string | string[]> = {};
  for (const [k, v] of Object.entries(policy.pcrs ?? {})) pcrs[Number(k)] = v;
  return async (doc: Uint8Array, nonce: Uint8Array): Promise<AttestedPeer> => {
    try {
      return await verifyAttestation(doc, {
        ...(policy.roots ? { roots: policy.roots } : {}),
        pcrs,
        nonce,
        maxAgeMs: policy.maxAgeMs ?? defaultDocAgeMaxMs,
        allowDebug: policy.allowDebug ?? false,
        ...(policy.clockSkewMs !== undefined ? { clockSkewMs: policy.clockSkewMs } : {}),
        now: (policy.now ?? Date.now)(),
      });
    } catch (err) {
      if (err instanceof AttestationError) {
        throw new EkvError('UNATTESTED', `node refused: ${err.code}: ${err.message}`, { reason: err.code, cause: err });
      }
      throw err;
    }
  };
}
