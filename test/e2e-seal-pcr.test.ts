// Only the measured image can unseal (issue 5). A ring's emulated KMS has the key policy a production key
// has: data keys go only to a Recipient whose attested PCR0/1/2 are the ring image's. An enclave built
// from another image (one appended comment: another PCR0), given a copy of a node's sealed blobs and the
// ring's KMS settings, is refused the data key (KMS_DENIED) through the real enclave path, and so never
// starts; the copied blobs are left as they were. A fresh node of that image is refused a new key too,
// while the ring's own image, as a control, starts in the same set-up.
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../client/index.ts';
import { kmsEnv, localBlobStore, type LocalKmsInfo } from '../cli/local/kms.ts';
import { LocalNode } from '../cli/local/node.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { measureImage } from '../emulator/measure.ts';
import { shortTempDir } from './helpers/local-ring.ts';
import { captureLogs } from './helpers/log-capture.ts';

const { logs, logger } = captureLogs();

let dir: string;
let ring: LocalRing;
let otherImage: string;
const started: LocalNode[] = [];

beforeAll(async () => {
  dir = shortTempDir('ekv-sp-');
  ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger });
  const kv = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
  try {
    for (let i = 0; i < 5; i++) await kv.put(`pcr-key-${i}`, `pcr value ${i}`);
  } finally {
    await kv.close();
  }
  otherImage = join(dir, 'other.mjs');
  writeFileSync(otherImage, Buffer.concat([readFileSync(ring.imagePath), Buffer.from('\n// another build of the image\n')]));
});

afterAll(async () => {
  for (const n of started) await n.stop().catch(() => undefined);
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A standalone node (founding its own ring) in `nodeDir`, sealing through the ring's KMS. */
function nodeWith(name: string, imagePath: string, nodeDir: string): LocalNode {
  const kms = JSON.parse(readFileSync(join(dir, 'kms.json'), 'utf8')) as LocalKmsInfo;
  const node = new LocalNode({
    name, dir: nodeDir, imagePath, ca: ring.ca, listenPort: 0, httpPort: 0, logger,
    enclaveEnv: () => ({ EKV_JOIN: '', ...kmsEnv(kms) }),
    startBlobStore: localBlobStore(logger),
    imdsUrl: kms.imdsUrl,
  });
  started.push(node);
  return node;
}

/** Start a node that must fail; stop it at once so LocalNode does not relaunch it. Returns the start error. */
async function failedStart(node: LocalNode): Promise<Error> {
  const err = await node.start().then(() => null, (e: unknown) => e as Error);
  await node.stop();
  expect(err).toBeInstanceOf(Error);
  return err as Error;
}

/** The sealed state's files (the host's own aws-credentials.json, refreshed from IMDS, is not sealed state). */
function sealedFiles(d: string): string[] {
  return readdirSync(d).filter((n) => n !== 'aws-credentials.json').sort();
}

function snapshotFiles(d: string): Record<string, string> {
  return Object.fromEntries(sealedFiles(d).map((n) => [n, readFileSync(join(d, n)).toString('hex')]));
}

function fatalOf(name: string): Record<string, unknown> | undefined {
  return logs.find((r) => r.node === name && r.msg === 'enclave failed to start');
}

describe('an image with another PCR0 against the ring\'s KMS', () => {
  it('is another measurement', () => {
    expect(measureImage(readFileSync(otherImage)).pcr0.toString('hex')).not.toBe(ring.cluster.trust.pcrs?.['0']);
  });

  it('cannot unseal a copy of a node\'s sealed state: KMS denies the data key, the blobs stay untouched', async () => {
    const nodeDir = join(dir, 'x1');
    cpSync(join(dir, 'node-1', 'data'), join(nodeDir, 'data'), { recursive: true });
    const copied = snapshotFiles(join(nodeDir, 'data'));
    expect(Object.keys(copied)).toContain('datakey');
    expect(Object.keys(copied).some((n) => n.startsWith('wal-'))).toBe(true);

    const err = await failedStart(nodeWith('other-copy', otherImage, nodeDir));
    expect(err.message).toMatch(/exited during start-up/);
    const fatal = fatalOf('other-copy');
    expect(JSON.stringify(fatal?.err)).toMatch(/KMS_DENIED/);
    expect(logs.some((r) => r.node === 'other-copy' && r.msg === 'sealed state recovered')).toBe(false);
    // Nothing was discarded or rewritten: a refused enclave never reached the log.
    expect(snapshotFiles(join(nodeDir, 'data'))).toEqual(copied);
  });

  it('is refused a new data key as well (GenerateDataKey), so it cannot seal under the ring\'s key', async () => {
    const err = await failedStart(nodeWith('other-fresh', otherImage, join(dir, 'x2')));
    expect(err.message).toMatch(/exited during start-up/);
    expect(JSON.stringify(fatalOf('other-fresh')?.err)).toMatch(/KMS_DENIED/);
    expect(sealedFiles(join(dir, 'x2', 'data'))).toEqual([]);
  });

  it('control: the ring\'s own image starts in the same set-up and seals', async () => {
    const node = nodeWith('same-fresh', ring.imagePath, join(dir, 'x3'));
    await node.start();
    expect(logs.find((r) => r.node === 'same-fresh' && r.msg === 'sealed state recovered')).toMatchObject({ created: true, reset: null });
    expect(readdirSync(join(dir, 'x3', 'data'))).toContain('datakey');
    await node.stop();
  });
});
