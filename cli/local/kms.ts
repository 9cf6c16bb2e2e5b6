/**
 * The emulated AWS side of a local ring: a KMS with the key policy a production key has (data keys
 * only to a Recipient whose attested PCR0/1/2 are the measured image's), its sealing key under the
 * well-known local key ARN the image pins (enclave/image-config.ts localKmsKeyArn; the key material is
 * random per ring directory), served over HTTPS with a certificate from the emulator's CA for
 * kms.us-east-1.amazonaws.com; and an IMDS whose rotating role credentials the hosts hand their
 * enclaves and the KMS requires.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { EmulatorCa } from '../../emulator/ca.ts';
import { startEmulatedImds, type EmulatedImds, type ImdsInit } from '../../emulator/imds.ts';
import { enclaveKeyPolicy, startEmulatedKms, type EmulatedKms } from '../../emulator/kms.ts';
import { measureImage } from '../../emulator/measure.ts';
import { serviceChild } from '../../emulator/service-log.ts';
import { localKmsKeyArn } from '../../enclave/image-config.ts';
import { startBlobStore } from '../../host/blob-store.ts';
import { verifyAttestation } from '../../verifier/index.ts';

/** What a node needs to reach the ring's KMS and IMDS (kms.json beside the cluster file). */
export interface LocalKmsInfo {
  /** The emulated KMS's address (host:port), where the host's outbound relay connects the enclave. */
  addr: string;
  /** Its URL (https), for tools that talk to it directly. */
  url: string;
  /** The key the image pins. */
  keyId: string;
  /** The emulated IMDS the hosts fetch role credentials from. */
  imdsUrl: string;
}

export interface LocalKms {
  kms: EmulatedKms;
  imds: EmulatedImds;
  info: LocalKmsInfo;
  close(): Promise<void>;
}

/**
 * `admitImages`: further images the key policy admits (tests only: an attack test's seam control image, which
 * must open the same sealed state; as an operator admits an upgrade's image). Applies to a key created now.
 */
export async function startLocalKms(o: { dir: string; ca: EmulatorCa; imagePath: string; logger: Logger; imds?: ImdsInit; admitImages?: string[] }): Promise<LocalKms> {
  const ms = [o.imagePath, ...(o.admitImages ?? [])].map((p) => measureImage(readFileSync(p)));
  const pcr = (k: 'pcr0' | 'pcr1' | 'pcr2'): string | string[] => {
    const all = [...new Set(ms.map((m) => m[k].toString('hex')))];
    return all.length === 1 ? all[0]! : all;
  };
  const imds = await startEmulatedImds(o.imds ?? {});
  const region = 'us-east-1';
  const tls = await o.ca.issueTlsServer([`kms.${region}.amazonaws.com`]);
  let kms: EmulatedKms;
  try {
    kms = await startEmulatedKms({
      region,
      keyPolicy: enclaveKeyPolicy({ pcr0: pcr('pcr0'), pcr1: pcr('pcr1'), pcr2: pcr('pcr2') }),
      verifyRecipient: (doc) => verifyAttestation(doc, { roots: [o.ca.rootPem] }),
      dir: join(o.dir, 'kms'),
      defaultKeyId: localKmsKeyArn.slice(localKmsKeyArn.indexOf(':key/') + 5),
      tls,
      credentials: imds.registry,
      logger: serviceChild(o.logger, 'kms'),
    });
  } catch (err) {
    await imds.close();
    throw err;
  }
  if (kms.defaultKeyId !== localKmsKeyArn) throw new Error(`emulated KMS key ${kms.defaultKeyId} is not the local image's ${localKmsKeyArn}`);
  return {
    kms, imds,
    info: { addr: `127.0.0.1:${kms.port}`, url: kms.url, keyId: kms.defaultKeyId, imdsUrl: imds.url },
    async close() {
      await kms.close();
      await imds.close();
    },
  };
}

/** Where the enclave reaches KMS: through the host's outbound relay to the emulated KMS's address. */
export function kmsEnv(kms: { addr: string } | { url: string }): Record<string, string> {
  return { EKV_KMS_ADDR: 'addr' in kms ? kms.addr : new URL(kms.url).host };
}

export function localBlobStore(logger: Logger) {
  return (socketPath: string, dataDir: string) => startBlobStore({ socketPath, dir: dataDir, logger: serviceChild(logger, 'blobs') });
}
