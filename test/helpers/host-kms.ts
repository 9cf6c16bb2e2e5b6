// The host's own view of a local ring's emulated KMS, as an attacker on the parent instance has it: the
// AWS SDK with the instance role's credentials (from the ring's emulated IMDS), over HTTPS. The host does
// not care whose certificate KMS shows (it is its own machine); the enclave does.
import https from 'node:https';
import { KMSClient } from '@aws-sdk/client-kms';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { LocalKms } from '../../cli/local/kms.ts';

export function hostKmsClient(kms: LocalKms): KMSClient {
  const c = kms.imds.current();
  return new KMSClient({
    endpoint: kms.kms.url,
    region: 'us-east-1',
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken },
    maxAttempts: 1,
    requestHandler: new NodeHttpHandler({ httpsAgent: new https.Agent({ rejectUnauthorized: false }) }),
  });
}
