/**
 * Settings compiled into the enclave image (scripts/build-enclave.mjs defines them), and therefore
 * measured into PCR0: what a production enclave must not take from its untrusted host.
 *
 * Production is decided by the root of the enclave's own attestation document (the NSM channel is
 * the one input the host cannot forge): the AWS Nitro root means real Nitro hardware, and then
 * - sealing uses the pinned KMS key (a key or alias ARN) through https://kms.<its region>.amazonaws.com,
 *   TLS-verified; the host's EKV_KMS_* settings cannot redirect it (a host-chosen key or endpoint
 *   would hand it the data key, and with it the node's identity key);
 * - the access mode of keys outside any namespace, and the replication factor, are the image's.
 * Under the emulator (any other root) the host is the developer's own machine, and the environment
 * is honoured, so one image serves both worlds.
 */
declare const EKV_PINNED_KMS_KEY: string;
declare const EKV_PINNED_ACCESS_MODE: string;
declare const EKV_PINNED_REPLICAS: string;
declare const EKV_PINNED_PEER_PCR0S: string;
declare const EKV_PINNED_SINGLE_NODE: string;

const pinned = (v: unknown, fallback: string): string => (typeof v === 'string' && v !== '' ? v : fallback);

export const imageConfig = {
  kmsKey: pinned(typeof EKV_PINNED_KMS_KEY === 'undefined' ? undefined : EKV_PINNED_KMS_KEY, ''),
  accessMode: pinned(typeof EKV_PINNED_ACCESS_MODE === 'undefined' ? undefined : EKV_PINNED_ACCESS_MODE, 'closed'),
  replicas: Number(pinned(typeof EKV_PINNED_REPLICAS === 'undefined' ? undefined : EKV_PINNED_REPLICAS, '3')),
  /**
   * Whether this deployment may run as a ring of one node (serving with no replicas). An image setting,
   * never the host's: a host that could say "you are alone" could make a node serve rolled-back state.
   */
  singleNode: pinned(typeof EKV_PINNED_SINGLE_NODE === 'undefined' ? undefined : EKV_PINNED_SINGLE_NODE, '') === '1',
  /** PCR0s (hex) of other images accepted as peers, for rolling upgrades; comma-separated at build time. */
  peerPcr0Allowlist: pinned(typeof EKV_PINNED_PEER_PCR0S === 'undefined' ? undefined : EKV_PINNED_PEER_PCR0S, '')
    .split(',')
    .map((x) => x.trim().toLowerCase())
    .filter((x) => /^[0-9a-f]{96}$/.test(x)),
};

const kmsArnRe = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key\/[0-9a-f-]{36}|alias\/[A-Za-z0-9/_-]+)$/;

/** The region of a KMS key or alias ARN, or null if it is not one. */
export function kmsArnRegion(arn: string): string | null {
  return kmsArnRe.exec(arn)?.[1] ?? null;
}
