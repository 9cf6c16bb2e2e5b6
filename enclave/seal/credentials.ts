/**
 * AWS credentials for the enclave's KMS calls. On Nitro the enclave has no network and no IMDS: the host
 * fetches the instance role's credentials (IMDSv2, host/credentials.ts) and keeps them, refreshed before
 * they expire, as the blob `aws-credentials.json` in IMDS's own JSON shape. The enclave's KMS client reads
 * them through a provider the SDK calls again when the ones it holds are near expiry.
 *
 * The credentials are the host's own and add no trust: KMS releases a data key only to an attested
 * Recipient of the pinned image (the key policy), whatever credentials sign the request. A host that
 * withholds or spoils them only denies service, which it can do anyway.
 */
import type { BlobClient } from './blob-client.ts';
import { KmsError } from './errors.ts';

/** What the SDK takes as credentials (its AwsCredentialIdentity). */
export interface AwsCredentialIdentity {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

export const credentialsBlob = 'aws-credentials.json';
export const credentialsBytesMax = 8192;
const fieldCharsMax = 4096;

/** Parse IMDS's security-credentials JSON ({AccessKeyId, SecretAccessKey, Token, Expiration}). */
export function parseHostCredentials(bytes: Uint8Array): AwsCredentialIdentity {
  const bad = (why: string) => new KmsError('KMS_CREDENTIALS', `${credentialsBlob}: ${why}`);
  if (bytes.length > credentialsBytesMax) throw bad(`over ${credentialsBytesMax} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw bad('not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('not an object');
  const field = (name: string, required: boolean): string | undefined => {
    const v = Object.hasOwn(raw as object, name) ? (raw as Record<string, unknown>)[name] : undefined;
    if (v === undefined && !required) return undefined;
    if (typeof v !== 'string' || v.length === 0 || v.length > fieldCharsMax) throw bad(`${name} must be a string of 1..${fieldCharsMax} characters`);
    return v;
  };
  const accessKeyId = field('AccessKeyId', true) as string;
  const secretAccessKey = field('SecretAccessKey', true) as string;
  const sessionToken = field('Token', false);
  const expirationText = field('Expiration', false);
  const expiration = expirationText === undefined ? undefined : new Date(expirationText);
  if (expiration !== undefined && Number.isNaN(expiration.getTime())) throw bad('Expiration is not a date');
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}), ...(expiration ? { expiration } : {}) };
}

/** A credentials provider that reads the host's current credentials each time the SDK asks. */
export function hostCredentialsProvider(blobs: BlobClient): () => Promise<AwsCredentialIdentity> {
  return async () => {
    const bytes = await blobs.get(credentialsBlob);
    if (bytes === null) throw new KmsError('KMS_CREDENTIALS', `the host has no ${credentialsBlob} (it fetches the instance role's credentials from IMDS)`);
    return parseHostCredentials(bytes);
  };
}
