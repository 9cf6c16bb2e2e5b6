/**
 * The emulated key policy: which operations a caller may run without a
 * Recipient (getting plaintext back), and the `kms:RecipientAttestation:*`
 * conditions a verified attestation document must meet (StringEqualsIgnoreCase;
 * an array means "any of"). The enclave default mirrors the production key
 * policy: GenerateDataKey and Decrypt only with a matching Recipient.
 */
import { KmsFault } from './kms-errors.ts';

export type KmsOperation = 'CreateKey' | 'GenerateDataKey' | 'Decrypt' | 'Encrypt' | 'GenerateRandom';

export type RecipientConditionKey = 'kms:RecipientAttestation:ImageSha384' | `kms:RecipientAttestation:PCR${number}`;

export interface KmsKeyPolicy {
  /** Operations allowed without a Recipient. */
  allowWithoutRecipient: KmsOperation[];
  /** Conditions on Recipient requests; every listed key must match. An empty object admits any verified document. */
  recipientConditions: Partial<Record<RecipientConditionKey, string | string[]>>;
}

/** The fields of a verified attestation document the policy reads (verifier/index.ts AttestationDocument fits). */
export interface RecipientDocument {
  pcrs: Map<number, Uint8Array>;
  publicKey: Uint8Array | null;
}

/** The production-like policy: only an enclave whose PCRs match gets keys, and only wrapped to its document's key. */
export function enclaveKeyPolicy(pcrs: { pcr0: string | string[]; pcr1?: string | string[]; pcr2?: string | string[]; pcr8?: string | string[] }): KmsKeyPolicy {
  const conditions: KmsKeyPolicy['recipientConditions'] = { 'kms:RecipientAttestation:ImageSha384': pcrs.pcr0 };
  if (pcrs.pcr1 !== undefined) conditions['kms:RecipientAttestation:PCR1'] = pcrs.pcr1;
  if (pcrs.pcr2 !== undefined) conditions['kms:RecipientAttestation:PCR2'] = pcrs.pcr2;
  if (pcrs.pcr8 !== undefined) conditions['kms:RecipientAttestation:PCR8'] = pcrs.pcr8;
  return { allowWithoutRecipient: ['Encrypt', 'GenerateRandom', 'CreateKey'], recipientConditions: conditions };
}

export function checkWithoutRecipient(policy: KmsKeyPolicy, op: KmsOperation): void {
  if (!policy.allowWithoutRecipient.includes(op)) {
    throw new KmsFault('AccessDeniedException', `The key policy does not allow ${op} without a Recipient attestation document`);
  }
}

export function checkRecipient(policy: KmsKeyPolicy, op: KmsOperation, doc: RecipientDocument): void {
  for (const [key, expected] of Object.entries(policy.recipientConditions)) {
    if (expected === undefined) continue;
    const actual = conditionValue(key, doc);
    const allowed = (Array.isArray(expected) ? expected : [expected]).map((v) => v.toLowerCase());
    if (actual === null || !allowed.includes(actual)) {
      throw new KmsFault('AccessDeniedException', `The key policy denies ${op}: condition ${key} is not satisfied`);
    }
  }
}

function conditionValue(key: string, doc: RecipientDocument): string | null {
  const m = /^kms:RecipientAttestation:(ImageSha384|PCR(\d{1,2}))$/.exec(key);
  if (m === null) return null; // an unknown condition key never matches
  const index = m[1] === 'ImageSha384' ? 0 : Number(m[2]);
  const pcr = doc.pcrs.get(index);
  return pcr === undefined ? null : Buffer.from(pcr).toString('hex');
}
