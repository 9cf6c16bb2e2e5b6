/**
 * The emulated KMS of a local ring, with the key policy a production key has:
 * data keys only to a Recipient whose attested PCR0/1/2 are the measured image's.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { EmulatorCa } from '../../emulator/ca.ts';
import { enclaveKeyPolicy, startEmulatedKms, type EmulatedKms } from '../../emulator/kms.ts';
import { measureImage } from '../../emulator/measure.ts';
import { startBlobStore } from '../../host/blob-store.ts';
import { verifyAttestation } from '../../verifier/index.ts';

export async function startLocalKms(o: { dir: string; ca: EmulatorCa; imagePath: string; logger: Logger }): Promise<EmulatedKms> {
  const m = measureImage(readFileSync(o.imagePath));
  return startEmulatedKms({
    keyPolicy: enclaveKeyPolicy({ pcr0: m.pcr0.toString('hex'), pcr1: m.pcr1.toString('hex'), pcr2: m.pcr2.toString('hex') }),
    verifyRecipient: (doc) => verifyAttestation(doc, { roots: [o.ca.rootPem] }),
    dir: join(o.dir, 'kms'),
    logger: o.logger.child({ svc: 'kms' }),
  });
}

/** The enclave's settings for sealing through this KMS (reached through the host's outbound relay). */
export function kmsEnv(kms: { url: string; keyId: string }): Record<string, string> {
  return {
    EKV_KMS_ENDPOINT: kms.url,
    EKV_KMS_KEY_ID: kms.keyId,
    AWS_REGION: 'us-east-1',
    // The emulator does not check SigV4; on Nitro the host passes the instance role's credentials,
    // which are useless without the enclave's attestation document (the key policy's Recipient condition).
    AWS_ACCESS_KEY_ID: 'emulated',
    AWS_SECRET_ACCESS_KEY: 'emulated',
  };
}

export function localBlobStore(logger: Logger) {
  return (socketPath: string, dataDir: string) => startBlobStore({ socketPath, dir: dataDir, logger: logger.child({ svc: 'blobs' }) });
}
