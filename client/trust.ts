/**
 * The client's trust policy: which roots, which PCRs, how old a document may
 * be. The default trusts only the AWS Nitro root; the emulator's root is
 * trusted only when the caller passes it explicitly, or explicitly accepts a
 * cluster file's trust section (resolveTrust below).
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
  // Review-18 F6: the verifier reads each key as Number(key), so '00', '0x0', ' 0' or '0.0' also pinned PCR0 (the last
  // one written won) while the checks below read only '0': `{ '0': image, '0x0': zeros }` with allowDebug passed as
  // a real pin and admitted every debug enclave. Indices are canonical decimals of a PCR the document can carry.
  for (const k of Object.keys(policy.pcrs ?? {})) {
    if (!/^(0|[1-9][0-9]?)$/.test(k) || Number(k) > 31) throw new EkvError('BAD_REQUEST', `trust.pcrs: ${JSON.stringify(k.slice(0, 16))} is not a PCR index (0..31, plain decimal)`);
  }
  const pcr0 = policy.pcrs?.['0'];
  const pinned = typeof pcr0 === 'string' ? pcr0.length > 0 : Array.isArray(pcr0) && pcr0.length > 0;
  if (!pinned && policy.allowAnyImage !== true) {
    throw new EkvError(
      'BAD_REQUEST',
      'the trust policy pins no PCR0: give trust.pcrs[0] (the image measurement; CLI --pcr 0=HEX), or allowAnyImage: true; ' +
        "a cluster file's trust section is used only with trustClusterFile: true (CLI --trust-cluster-file)",
    );
  }
  // review-17 F4: a debug-mode enclave reports PCR0 as zeros whatever its image, so with allowDebug a zero PCR0 in the
  // allowlist admits every debug enclave of every image (the attacker's own): that is allowAnyImage, said openly or not at all.
  const zeroPcr0 = (Array.isArray(pcr0) ? pcr0 : [pcr0]).some((v) => typeof v === 'string' && /^(00)+$/.test(v));
  if (policy.allowDebug === true && zeroPcr0 && policy.allowAnyImage !== true) {
    throw new EkvError(
      'BAD_REQUEST',
      'allowDebug with PCR0 pinned to zeros accepts every debug-mode enclave of every image (they all report PCR0 as zeros): ' +
        "pin the image's own PCR0 (debug enclaves then never match), or say allowAnyImage: true",
    );
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

// ---------------------------------------------------------------- where the policy comes from

/**
 * Who supplied each part of the policy in force. A cluster file is written by whoever runs the ring
 * (the operator, whom the threat model does not trust), so its addresses are used, but its trust
 * section only when the caller opts in; see docs/client-trust.md.
 */
export type TrustSource = 'caller' | 'cluster-file' | 'default';

export interface ResolvedTrust {
  policy: TrustPolicy;
  /** Where the policy as a whole came from. */
  from: TrustSource;
  /** Where each part came from: roots, pcr0..pcrN, maxAgeMs, allowDebug, allowAnyImage, clockSkewMs. */
  parts: Record<string, TrustSource>;
}

export interface TrustChoice {
  /** The caller's own policy: when given, it is the whole policy and the file's trust is ignored. */
  trust?: TrustPolicy | undefined;
  /** The cluster file's trust section, if there is a file. */
  fileTrust?: TrustPolicy | undefined;
  /** The caller explicitly accepts the cluster file's trust section (roots, PCRs, allowAnyImage, allowDebug). */
  trustClusterFile?: boolean | undefined;
}

const policyParts = ['roots', 'maxAgeMs', 'allowDebug', 'allowAnyImage', 'clockSkewMs'] as const;

/**
 * The policy in force. Never a merge: the caller's policy replaces the file's, and the file's is used
 * only on `trustClusterFile`. With neither, the default (the AWS Nitro root, nothing pinned), which
 * checkTrustPolicy refuses because it pins no PCR0.
 */
export function resolveTrust(c: TrustChoice): ResolvedTrust {
  if (c.trust !== undefined && c.trustClusterFile === true) {
    throw new EkvError('BAD_REQUEST', 'give either a trust policy or trustClusterFile, not both (they are never merged)');
  }
  if (c.trustClusterFile === true && c.fileTrust === undefined) {
    throw new EkvError('BAD_REQUEST', 'trustClusterFile needs a cluster file');
  }
  const from: TrustSource = c.trust !== undefined ? 'caller' : c.trustClusterFile === true ? 'cluster-file' : 'default';
  const policy: TrustPolicy = from === 'caller' ? { ...c.trust } : from === 'cluster-file' ? copyFileTrust(c.fileTrust as TrustPolicy) : {};
  const parts: Record<string, TrustSource> = {};
  for (const k of policyParts) parts[k] = policy[k] === undefined ? 'default' : from;
  // The one exception to "never a merge": a ring id only narrows trust (it refuses nodes of other rings and
  // accepts none that the rest of the policy refuses), so the file's is kept unless the caller names its own.
  const fileRingId = c.fileTrust?.ringId;
  if (policy.ringId === undefined && typeof fileRingId === 'string') {
    policy.ringId = fileRingId;
    parts.ringId = 'cluster-file';
  } else {
    parts.ringId = policy.ringId === undefined ? 'default' : from;
  }
  for (const i of Object.keys(policy.pcrs ?? {})) parts[`pcr${i}`] = from;
  if (parts.pcr0 === undefined) parts.pcr0 = 'default';
  return { policy, from, parts };
}

/** Only the policy fields: a file cannot smuggle in a clock (`now`) or anything else. */
function copyFileTrust(t: TrustPolicy): TrustPolicy {
  const out: TrustPolicy = {};
  if (Array.isArray(t.roots)) out.roots = t.roots.filter((r): r is string => typeof r === 'string');
  if (t.pcrs && typeof t.pcrs === 'object') out.pcrs = { ...t.pcrs };
  if (typeof t.maxAgeMs === 'number') out.maxAgeMs = t.maxAgeMs;
  if (typeof t.clockSkewMs === 'number') out.clockSkewMs = t.clockSkewMs;
  if (t.allowDebug === true) out.allowDebug = true;
  if (t.allowAnyImage === true) out.allowAnyImage = true;
  if (typeof t.ringId === 'string') out.ringId = t.ringId;
  return out;
}
