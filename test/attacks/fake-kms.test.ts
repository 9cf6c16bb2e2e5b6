// Attack (issue 10, the KMS transport): the host runs a KMS of its own and points the enclave at it.
//
// The enclave reaches KMS only through sockets the host provides, so the host can connect it anywhere.
// Its fake KMS has a key under the very ARN the image pins (so the KeyId check alone would pass) and a
// policy that lets the host Decrypt the node's CiphertextBlob itself: a data key the host knows. The
// enclave verifies KMS over TLS against the root its own NSM document chains to (locally the emulator's
// root; on Nitro the public roots), for the name kms.<region>.amazonaws.com: the host's certificate, from
// a CA of its own, is refused, and so is a plain-HTTP fake; the node never starts.
// Control: a fake KMS whose certificate does chain to the enclave's root (which no real host has) is
// accepted and hands the host the data key, so the TLS check is what stops the attack.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { Decoder } from 'cbor-x';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localBlobStore, kmsEnv } from '../../cli/local/kms.ts';
import { LocalNode } from '../../cli/local/node.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import { EmulatorCa } from '../../emulator/ca.ts';
import { startEmulatedKms, type EmulatedKms } from '../../emulator/kms.ts';
import { localKmsKeyArn } from '../../enclave/image-config.ts';
import { verifyAttestation } from '../../verifier/index.ts';
import { shortTempDir } from '../helpers/local-ring.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import https from 'node:https';
import { NodeHttpHandler } from '@smithy/node-http-handler';

const { logs, logger } = captureLogs();
let dir: string;
let ring: LocalRing;
const fakes: EmulatedKms[] = [];
const started: LocalNode[] = [];
const permissive = { allowWithoutRecipient: ['GenerateDataKey', 'Decrypt', 'Encrypt'] as ('GenerateDataKey' | 'Decrypt' | 'Encrypt')[], recipientConditions: {} };

beforeAll(async () => {
  dir = shortTempDir('ekv-fk-');
  ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger });
}, 60_000);

afterAll(async () => {
  for (const n of started) await n.stop().catch(() => undefined);
  for (const f of fakes) await f.close();
  await ring?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function fakeKms(tls: { certPem: string; keyPem: string } | undefined): Promise<EmulatedKms> {
  const f = await startEmulatedKms({
    keyPolicy: permissive,
    verifyRecipient: (doc) => verifyAttestation(doc, { roots: [ring.ca.rootPem] }), // the root is public; the policy asks nothing of the document
    defaultKeyId: localKmsKeyArn.slice(localKmsKeyArn.indexOf(':key/') + 5),
    ...(tls ? { tls } : {}),
  });
  fakes.push(f);
  expect(f.defaultKeyId).toBe(localKmsKeyArn);
  return f;
}

/** The ring's image on a node the host connects to `kms`; resolves to the start error, or null when it started. */
async function nodeAgainst(name: string, kms: EmulatedKms): Promise<Error | null> {
  const node = new LocalNode({
    name, dir: join(dir, name), imagePath: ring.imagePath, ca: ring.ca, listenPort: 0, httpPort: 0, logger,
    enclaveEnv: () => ({ EKV_JOIN: '', ...kmsEnv({ addr: `127.0.0.1:${kms.port}` }) }),
    startBlobStore: localBlobStore(logger), imdsUrl: ring.kms!.info.imdsUrl,
  });
  started.push(node);
  const err = await node.start().then(() => null, (e: unknown) => e as Error);
  if (err) await node.stop();
  return err;
}

const fatalOf = (name: string) => JSON.stringify(logs.find((r) => r.node === name && r.msg === 'enclave failed to start') ?? null);

describe('a KMS run by the host', () => {
  it('with a certificate from a CA of its own for kms.us-east-1.amazonaws.com: refused, the node never starts', async () => {
    const own = await EmulatorCa.createEphemeral();
    const fake = await fakeKms(await own.issueTlsServer(['kms.us-east-1.amazonaws.com']));
    const err = await nodeAgainst('own-ca', fake);
    expect(err?.message).toMatch(/exited during start-up/);
    expect(fatalOf('own-ca')).toMatch(/KMS_UNAVAILABLE/);
    expect(logs.some((r) => r.node === 'own-ca' && r.msg === 'sealed state recovered')).toBe(false);
  });

  it('over plain HTTP: refused', async () => {
    const err = await nodeAgainst('plain', await fakeKms(undefined));
    expect(err?.message).toMatch(/exited during start-up/);
    expect(fatalOf('plain')).toMatch(/KMS_UNAVAILABLE/);
  });

  it('control: a fake whose certificate chains to the enclave\'s root is accepted, and the host learns the data key', async () => {
    const fake = await fakeKms(await ring.ca.issueTlsServer(['kms.us-east-1.amazonaws.com']));
    expect(await nodeAgainst('control', fake)).toBeNull();
    const rec = new Decoder({ useRecords: false, mapsAsObjects: true }).decode(readFileSync(join(dir, 'control', 'data', 'datakey'))) as { nodeId: Uint8Array; ciphertextBlob: Uint8Array };
    const sdk = new KMSClient({
      endpoint: fake.url, region: 'us-east-1', maxAttempts: 1, credentials: { accessKeyId: 'AKIDHOSTHOSTHOST', secretAccessKey: 'x' },
      requestHandler: new NodeHttpHandler({ httpsAgent: new https.Agent({ rejectUnauthorized: false }) }),
    });
    try {
      const out = await sdk.send(new DecryptCommand({ CiphertextBlob: rec.ciphertextBlob, EncryptionContext: { 'ekv:store': Buffer.from(rec.nodeId).toString('hex') } }));
      expect(out.Plaintext?.length).toBe(32);
    } finally {
      sdk.destroy();
    }
  });
});
