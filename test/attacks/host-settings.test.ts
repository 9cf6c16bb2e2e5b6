// Attack (issue 10; the local world takes its security settings from the image, as Nitro does): the host
// sets the enclave's environment to change what decides trust. It asks for an open access mode on an
// image built closed, five replicas on an image built for one, "you are alone" (EKV_SOLO), its own KMS
// key and endpoint (EKV_KMS_KEY_ID, EKV_KMS_ENDPOINT, AWS_REGION), and even the build-time names
// (EKV_PINNED_*). None of it has any effect: anonymous writes stay refused, the node reports the
// image's replication factor, and it seals under the image's pinned key ARN through the real KMS. The
// same settings in node-config.json (the Nitro path) stop the enclave at start, and environment that
// would change the code itself (NODE_OPTIONS --require, LD_PRELOAD) never reaches the enclave (on Nitro
// the environment is part of the measured EIF; the emulator's launcher drops it).
// Control: the same environment on the image built open does let an anonymous write through, so the
// access check below can tell the two apart (and, on a build whose enclave honours EKV_ACCESS_MODE,
// the first test fails).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateKeyCommand } from '@aws-sdk/client-kms';
import { Decoder } from 'cbor-x';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError } from '../../client/index.ts';
import { localBlobStore, kmsEnv } from '../../cli/local/kms.ts';
import { LocalNode } from '../../cli/local/node.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import { localKmsKeyArn } from '../../enclave/image-config.ts';
import { hostKmsClient } from '../helpers/host-kms.ts';
import { imageFor, shortTempDir, testLogger } from '../helpers/local-ring.ts';

const logger = testLogger();
let dir: string;
let ring: LocalRing;
let hostKeyArn: string;
const started: LocalNode[] = [];

beforeAll(async () => {
  dir = shortTempDir('ekv-hs-');
  // A closed, R=1 ring: its KMS and CA serve the hostile node below.
  ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger, access: 'closed' });
  const sdk = hostKmsClient(ring.kms!);
  try {
    hostKeyArn = (await sdk.send(new CreateKeyCommand({ Description: "the host's key" }))).KeyMetadata!.Arn!;
  } finally {
    sdk.destroy();
  }
}, 60_000);

afterAll(async () => {
  for (const n of started) await n.stop().catch(() => undefined);
  await ring?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function hostileEnv(): Record<string, string> {
  return {
    EKV_ACCESS_MODE: 'open', EKV_PINNED_ACCESS_MODE: 'open',
    EKV_REPLICAS: '5', EKV_PINNED_REPLICAS: '5',
    EKV_SOLO: '1', EKV_PINNED_SINGLE_NODE: '1',
    EKV_KMS_KEY_ID: hostKeyArn, EKV_PINNED_KMS_KEY: hostKeyArn,
    EKV_KMS_ENDPOINT: 'http://127.0.0.1:9', AWS_REGION: 'eu-west-1', EKV_KMS_REGION: 'eu-west-1',
  };
}

async function hostileNode(name: string, imagePath: string, extraEnv: Record<string, string> = {}): Promise<LocalNode> {
  const info = ring.kms!.info;
  const node = new LocalNode({
    name, dir: join(dir, name), imagePath, ca: ring.ca, listenPort: 0, httpPort: 0, logger,
    enclaveEnv: () => ({ ...hostileEnv(), EKV_JOIN: '', ...kmsEnv(info), ...extraEnv }),
    startBlobStore: localBlobStore(logger), imdsUrl: info.imdsUrl,
  });
  started.push(node);
  try {
    await node.start();
  } catch (err) {
    await node.stop(); // no relaunches of an enclave that cannot start
    throw err;
  }
  return node;
}

async function anonymousPut(node: LocalNode, pcr0: string): Promise<string> {
  const kv = await connect({ nodes: [node.addr], trust: { roots: [ring.ca.rootPem], pcrs: { '0': pcr0 } }, timeoutMs: 10_000 });
  try {
    const status = await kv.node(node.addr).call('status', {});
    const put = await kv.put('loose-key', 'v').then(() => 'OK', (e: unknown) => (e instanceof EkvError ? e.code : String(e)));
    return `${put} replicas=${String(status.replicas)}`;
  } finally {
    await kv.close();
  }
}

describe('host-set environment against a closed, R=1 image', () => {
  it('changes neither the access mode nor the replication factor', async () => {
    const node = await hostileNode('hostile', ring.imagePath);
    expect(await anonymousPut(node, node.measurement!.pcr0.toString('hex'))).toBe('FORBIDDEN replicas=1');
  });

  it('nor the KMS key: the node sealed under the image\'s pinned key ARN', () => {
    const rec = new Decoder({ useRecords: false, mapsAsObjects: true }).decode(readFileSync(join(dir, 'hostile', 'data', 'datakey'))) as { keyId: string };
    expect(rec.keyId).toBe(localKmsKeyArn);
    expect(rec.keyId).not.toBe(hostKeyArn);
  });

  it('nor through node-config.json (the Nitro path): a trust setting there stops the enclave at start', async () => {
    const data = join(dir, 'hostile-config', 'data');
    mkdirSync(data, { recursive: true });
    writeFileSync(join(data, 'node-config.json'), JSON.stringify({ selfAddr: '127.0.0.1:1', join: '', accessMode: 'open', replicas: '5', kmsKeyId: hostKeyArn }));
    const err = await hostileNode('hostile-config', ring.imagePath, { EKV_CONFIG_FROM_HOST: '1' }).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/exited during start-up/);
  });

  it('nor the code that runs: NODE_OPTIONS, LD_PRELOAD and the like never reach the enclave', async () => {
    const marker = join(dir, 'injected');
    const evil = join(dir, 'evil.cjs');
    writeFileSync(evil, `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'host code ran in the enclave');\n`);
    await hostileNode('inject', ring.imagePath, { NODE_OPTIONS: `--require ${evil}`, NODE_EXTRA_CA_CERTS: evil, LD_PRELOAD: '/nonexistent.so' });
    expect(existsSync(marker)).toBe(false);
  });

  it('control: the image built open lets the same anonymous write through', async () => {
    const open = await imageFor({ nodes: 1, replicas: 1, access: 'open' });
    // The ring's KMS releases keys only to the ring's image: this control runs unsealed.
    const unsealedOpen = await imageFor({ nodes: 1, replicas: 1, access: 'open', seal: false });
    expect(open).not.toBe(ring.imagePath);
    const node = await hostileNode('control', unsealedOpen);
    expect(await anonymousPut(node, node.measurement!.pcr0.toString('hex'))).toBe('OK replicas=1');
  });
});
