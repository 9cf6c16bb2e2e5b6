/**
 * The PCRs file written by enclave/build-eif.sh from `nitro-cli build-enclave` output:
 * { "PCR0": "<96 hex>", "PCR1": "<96 hex>", "PCR2": "<96 hex>", "KmsKeyArn": "arn:aws:kms:...:key/..." }
 * (SHA-384, lowercase hex; KmsKeyArn is the key ARN the image pins, EKV_PINNED_KMS_KEY at build time).
 */
export interface Pcrs {
  PCR0: string;
  PCR1: string;
  PCR2: string;
  /** The KMS key ARN compiled into the image (absent in files from older builds). */
  KmsKeyArn?: string;
  /** The replication factor compiled into the image (EKV_PINNED_REPLICAS). */
  Replicas?: number;
  /** The access mode compiled into the image (EKV_PINNED_ACCESS_MODE), for rebuilds (eif-verify). */
  AccessMode?: 'open' | 'closed';
  /** Whether the image accepts peers of another image that prove the ring secret (EKV_PINNED_RING_PEERS). */
  RingPeers?: boolean;
}

/** A KMS key ARN (not an alias: an alias can be repointed by UpdateAlias). Group 1: region, 2: account. */
export const kmsKeyArnPattern = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key\/([0-9a-f-]{36}|mrk-[0-9a-f]{32})$/;

export const pcr0Pattern = /^[0-9a-f]{96}$/;
const zeros = '0'.repeat(96);

export function parsePcrs(text: string, source: string): Pcrs {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new Error(`${source}: not JSON`, { cause });
  }
  if (typeof raw !== 'object' || raw === null) throw new Error(`${source}: not a JSON object`);
  const o = raw as Record<string, unknown>;
  const out: Partial<Pcrs> = {};
  for (const k of ['PCR0', 'PCR1', 'PCR2'] as const) {
    const v = o[k];
    if (typeof v !== 'string' || !pcr0Pattern.test(v)) throw new Error(`${source}: ${k} must be 96 lowercase hex digits`);
    // A debug-mode enclave reports all-zero PCRs; a key bound to zeros would open to any debug enclave.
    if (v === zeros) throw new Error(`${source}: ${k} is all zeros (a debug-mode measurement)`);
    out[k] = v;
  }
  if (o['KmsKeyArn'] !== undefined) {
    if (typeof o['KmsKeyArn'] !== 'string' || !kmsKeyArnPattern.test(o['KmsKeyArn'])) {
      throw new Error(`${source}: KmsKeyArn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not an alias`);
    }
    out.KmsKeyArn = o['KmsKeyArn'];
  }
  if (o['Replicas'] !== undefined) {
    const r = o['Replicas'];
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 1 || r > 8) throw new Error(`${source}: Replicas must be an integer in 1..8`);
    out.Replicas = r;
  }
  if (o['AccessMode'] !== undefined) {
    if (o['AccessMode'] !== 'open' && o['AccessMode'] !== 'closed') throw new Error(`${source}: AccessMode must be open or closed`);
    out.AccessMode = o['AccessMode'];
  }
  if (o['RingPeers'] !== undefined) {
    if (typeof o['RingPeers'] !== 'boolean') throw new Error(`${source}: RingPeers must be true or false`);
    out.RingPeers = o['RingPeers'];
  }
  return out as Pcrs;
}
