/**
 * Request authentication of the emulated KMS, as far as it matters here: real KMS refuses a request
 * with no credentials (MissingAuthenticationTokenException), with an access key or session token it
 * does not know (UnrecognizedClientException), or with expired temporary credentials
 * (ExpiredTokenException). The credentials it knows are those an emulated IMDS issued (emulator/imds.ts).
 * The SigV4 signature itself is not recomputed: credentials decide nothing about who gets a data key
 * (the key policy's Recipient condition does), they only have to be present and current, as on AWS.
 */
import type http from 'node:http';
import { KmsFault } from './kms-errors.ts';

export interface IssuedCredential {
  accessKeyId: string;
  sessionToken: string;
  /** ms since the epoch. */
  expiresAt: number;
}

/** The credentials an issuer (the emulated IMDS) handed out. */
export interface CredentialRegistry {
  lookup(accessKeyId: string): IssuedCredential | undefined;
}

const credentialRe = /^AWS4-HMAC-SHA256 Credential=([A-Z0-9]{16,128})\/\d{8}\/[a-z0-9-]{1,32}\/kms\/aws4_request, ?SignedHeaders=[a-z0-9;-]{1,1024}, ?Signature=[0-9a-f]{64}$/;

export function checkCredentials(req: http.IncomingMessage, registry: CredentialRegistry, now: number): void {
  const auth = req.headers['authorization'];
  if (typeof auth !== 'string' || auth.length === 0) {
    throw new KmsFault('MissingAuthenticationTokenException', 'Missing Authentication Token');
  }
  const m = credentialRe.exec(auth.length > 2048 ? '' : auth);
  if (m === null) throw new KmsFault('IncompleteSignatureException', 'Authorization header is not a SigV4 signature for kms');
  const issued = registry.lookup(m[1] as string);
  const token = req.headers['x-amz-security-token'];
  if (issued === undefined || token !== issued.sessionToken) {
    throw new KmsFault('UnrecognizedClientException', 'The security token included in the request is invalid.');
  }
  if (now >= issued.expiresAt) throw new KmsFault('ExpiredTokenException', 'The security token included in the request is expired');
}
