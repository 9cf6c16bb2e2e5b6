// An emulated KMS whose key policy admits one measured image, the real verifier bound to the emulator's
// root, and two emulated NSMs: one for that image and one for another build (another PCR0).
import net from 'node:net';
import { KMSClient } from '@aws-sdk/client-kms';
import { EmulatorCa } from '../../emulator/ca.ts';
import { enclaveKeyPolicy, startEmulatedKms, type EmulatedKms, type KmsKeyPolicy } from '../../emulator/kms.ts';
import { measureImage, pcrMap } from '../../emulator/measure.ts';
import { EmulatedNsm } from '../../emulator/nsm.ts';
import { createEnclaveKms, type AttestFn, type EnclaveKms } from '../../enclave/seal/kms-client.ts';
import { verifyAttestation } from '../../verifier/index.ts';

export const testCredentials = { accessKeyId: 'AKIDEMULATED', secretAccessKey: 'emulated-secret' };
export const region = 'us-east-1';

export interface KmsEnv {
  ca: EmulatorCa;
  kms: EmulatedKms;
  goodPcr0: string;
  attestGood: AttestFn;
  attestOther: AttestFn;
  sdk(): KMSClient;
  /** The enclave's client, bound to the default key (or `keyArn`). */
  enclave(o?: { keyArn?: string; unsafeSkipKeyIdCheck?: boolean }): EnclaveKms;
  restart(dir?: string): Promise<void>;
  close(): Promise<void>;
}

export async function startKmsEnv(opts: { dir?: string; keyPolicy?: KmsKeyPolicy } = {}): Promise<KmsEnv> {
  const ca = await EmulatorCa.createEphemeral();
  const good = measureImage(Buffer.from('enclave image A'));
  const other = measureImage(Buffer.from('enclave image B'));
  const nsmGood = new EmulatedNsm({ ca, pcrs: pcrMap(good), moduleId: ca.newModuleId() });
  const nsmOther = new EmulatedNsm({ ca, pcrs: pcrMap(other), moduleId: ca.newModuleId() });
  const goodPcr0 = Buffer.from(good.pcr0).toString('hex');
  const keyPolicy = opts.keyPolicy ?? enclaveKeyPolicy({ pcr0: goodPcr0, pcr1: Buffer.from(good.pcr1).toString('hex') });
  const start = (dir?: string): Promise<EmulatedKms> =>
    startEmulatedKms({ keyPolicy, verifyRecipient: (doc) => verifyAttestation(doc, { roots: [ca.rootPem] }), ...(dir ? { dir } : {}) });
  const clients: Array<{ destroy(): void }> = [];
  const env: KmsEnv = {
    ca,
    kms: await start(opts.dir),
    goodPcr0,
    attestGood: (publicKey) => nsmGood.attest({ publicKey }),
    attestOther: (publicKey) => nsmOther.attest({ publicKey }),
    sdk() {
      const c = new KMSClient({ endpoint: env.kms.url, region, credentials: testCredentials, maxAttempts: 1 });
      clients.push(c);
      return c;
    },
    enclave(o = {}) {
      // The enclave reaches KMS only through the socket it is given, as through the host's relay.
      const port = env.kms.port;
      const c = createEnclaveKms({
        endpoint: 'http://kms.local', region, credentials: testCredentials, connect: () => net.connect(port, '127.0.0.1'),
        keyArn: o.keyArn ?? env.kms.defaultKeyId, ...(o.unsafeSkipKeyIdCheck ? { unsafeSkipKeyIdCheck: true } : {}),
      });
      clients.push(c);
      return c;
    },
    async restart(dir) {
      await env.kms.close();
      env.kms = await start(dir);
    },
    async close() {
      for (const c of clients) c.destroy();
      await env.kms.close();
    },
  };
  return env;
}
