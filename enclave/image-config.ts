/**
 * Settings compiled into the enclave image (scripts/build-enclave.mjs defines them), and therefore
 * measured into PCR0: everything that decides trust, which the untrusted host must never choose.
 * This holds in both worlds: on Nitro, and under the emulator (a local ring runs an image variant
 * built for its options, cli/local/image.ts), so an attack that works locally works on Nitro and
 * the reverse.
 *
 * - kmsKeyArn: the one KMS key data keys come from, by key ARN (never an alias, which a key
 *   administrator can repoint with UpdateAlias). Every KMS call names it and every answer must name it.
 *   Empty: no sealing (refused on Nitro; a local `--no-seal` image).
 * - accessMode: what keys outside any namespace allow. replicas: the replication factor R.
 * - singleNode: whether this deployment may run as a ring of one node.
 * - peerPcr0Allowlist: PCR0s of other images accepted as peers (rolling upgrades).
 * - ringPeers: also accept as a peer an enclave of another image that proves this ring's secret, which only
 *   images the KMS key policy admits can open (rolling upgrades where the old image must accept the new one;
 *   docs/deploy.md section 6). Off unless built with EKV_PINNED_RING_PEERS=1.
 *
 * The host gives only "where things are" (enclave/config.ts): its address, a ring member to join,
 * the transport to KMS. Production (Nitro) is decided by the root of the enclave's own attestation
 * document, which the host cannot forge; it changes only which TLS roots KMS is verified against.
 */
declare const EKV_PINNED_KMS_KEY: string;
declare const EKV_PINNED_ACCESS_MODE: string;
declare const EKV_PINNED_REPLICAS: string;
declare const EKV_PINNED_PEER_PCR0S: string;
declare const EKV_PINNED_SINGLE_NODE: string;
declare const EKV_PINNED_RING_PEERS: string;
declare const EKV_PINNED_RECOVERY_MEMBERS: string;
declare const EKV_PINNED_RECOVERY_THRESHOLD: string;
declare const EKV_TEST_UNSAFE_SKIP_KEYID_CHECK: string;
declare const EKV_TEST_HOST_MAY_FOUND: string;
declare const EKV_TEST_NO_RING_CHECK: string;
declare const EKV_TEST_ANY_PULL_SOURCE: string;

const pinned = (v: unknown, fallback: string): string => (typeof v === 'string' && v !== '' ? v : fallback);

/**
 * The key a local image pins unless built with another (the emulated KMS creates its sealing key under
 * this ARN; its key material is random per ring directory). Account 111122223333 is AWS's documentation
 * account: no real key has this ARN, and a production enclave refuses it.
 */
export const localKmsKeyArn = 'arn:aws:kms:us-east-1:111122223333:key/0e4b1000-0000-4000-8000-00000000e4b1';

export interface ImageConfig {
  kmsKeyArn: string;
  accessMode: 'open' | 'closed';
  replicas: number;
  singleNode: boolean;
  peerPcr0Allowlist: string[];
  /** Absent or false in images built before it or without it. */
  ringPeers?: boolean;
  /**
   * Recovery members (docs/recovery.md): principals (ekv1...) of whom `recoveryThreshold` must sign the
   * open of a ring that restarted as a whole. Absent or empty: no recovery mode (a whole-ring restart
   * reconciles among its own nodes, as before).
   */
  recoveryMembers?: string[];
  recoveryThreshold?: number;
}

export const imageConfig: ImageConfig = {
  kmsKeyArn: typeof EKV_PINNED_KMS_KEY === 'undefined' ? localKmsKeyArn : EKV_PINNED_KMS_KEY,
  accessMode: pinned(typeof EKV_PINNED_ACCESS_MODE === 'undefined' ? undefined : EKV_PINNED_ACCESS_MODE, 'closed') === 'open' ? 'open' : 'closed',
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
  ringPeers: pinned(typeof EKV_PINNED_RING_PEERS === 'undefined' ? undefined : EKV_PINNED_RING_PEERS, '') === '1',
  recoveryMembers: pinned(typeof EKV_PINNED_RECOVERY_MEMBERS === 'undefined' ? undefined : EKV_PINNED_RECOVERY_MEMBERS, '')
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== ''),
  recoveryThreshold: Number(pinned(typeof EKV_PINNED_RECOVERY_THRESHOLD === 'undefined' ? undefined : EKV_PINNED_RECOVERY_THRESHOLD, '0')),
};

/**
 * A test seam, compiled in (so measured, so another PCR0): the KMS client neither names the pinned key in
 * Decrypt nor checks the KeyId of answers. Only test/attacks/ builds it, to show the planted-datakey test
 * catches the hole; a production enclave refuses to start with it (enclave/persist.ts).
 */
export const testUnsafeSkipKeyIdCheck =
  (typeof EKV_TEST_UNSAFE_SKIP_KEYID_CHECK === 'undefined' ? '' : EKV_TEST_UNSAFE_SKIP_KEYID_CHECK) === '1';

/*
 * Test seams of the membership rules (docs/membership.md), compiled in like testUnsafeSkipKeyIdCheck: each
 * switches one protection off so that an attack test has a control showing it catches the hole. Never from
 * the host (a hostile host sets the enclave's environment, locally as on Nitro): only an image built with
 * the seam has it, and that image has another PCR0. A production enclave refuses to start with any of them.
 */
/** A node with no join address takes every range alone (the old host-chosen "solo"; enclave.ts). */
export const testHostMayFound = (typeof EKV_TEST_HOST_MAY_FOUND === 'undefined' ? '' : EKV_TEST_HOST_MAY_FOUND) === '1';
/** The peer handshake skips ring ids and ring MACs. */
export const testNoRingCheck = (typeof EKV_TEST_NO_RING_CHECK === 'undefined' ? '' : EKV_TEST_NO_RING_CHECK) === '1';
/** A node with no join address takes every range alone (the old "serve without a vouching source"). */
export const testAnyPullSource = (typeof EKV_TEST_ANY_PULL_SOURCE === 'undefined' ? '' : EKV_TEST_ANY_PULL_SOURCE) === '1';

/** The names of the test seams this image was built with (empty for every image but test/attacks/ controls). */
export function testSeamsOn(): string[] {
  return [
    ...(testUnsafeSkipKeyIdCheck ? ['skip-keyid-check'] : []),
    ...(testHostMayFound ? ['host-may-found'] : []),
    ...(testNoRingCheck ? ['no-ring-check'] : []),
    ...(testAnyPullSource ? ['any-pull-source'] : []),
  ];
}

const kmsKeyArnRe = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key\/([0-9a-f-]{36}|mrk-[0-9a-f]{32})$/;

/** The region of a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), or null if it is not one (an alias is not). */
export function kmsKeyArnRegion(arn: string): string | null {
  return kmsKeyArnRe.exec(arn)?.[1] ?? null;
}
