// Attack (issue 10, item 1): the host chooses the KMS key on Decrypt.
//
// The host creates a KMS key of its own with a permissive policy, calls GenerateDataKey on it (it gets
// the plaintext P and the CiphertextBlob C), writes {nodeId, ciphertextBlob: C} as the node's `datakey`
// blob and restarts the enclave. Before the fix, KMS decrypted C under the host's key and wrapped P to
// the genuine enclave's Recipient: the enclave sealed its identity key and every value under a key the
// host knows. Now the enclave names its image's pinned key ARN in Decrypt (KMS answers
// IncorrectKeyException) and refuses any answer whose KeyId is not that ARN: it never starts on the
// planted key, and writes nothing under it.
//
// Control: an image built with the test seam testUnsafeSkipKeyIdCheck (no KeyId in Decrypt, no check of
// the answer, as before the fix) accepts the planted key, and the host then reads the identity key the
// node sealed under it: so this test fails on a build with the hole. (The planted node had its log
// deleted, so as a single node it rightly serves nothing; sealing its identity is enough for the attack.)
import { readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GenerateDataKeyCommand } from '@aws-sdk/client-kms';
import { Encoder } from 'cbor-x';
import { afterEach, describe, expect, it } from 'vitest';
import { connect } from '../../client/index.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import { createBlobClient } from '../../enclave/seal/blob-client.ts';
import { SealedStore } from '../../enclave/seal/log.ts';
import { startBlobStore } from '../../host/blob-store.ts';
import { decodeCbor } from '../../protocol/cbor.ts';
import { hostKmsClient } from '../helpers/host-kms.ts';
import { shortTempDir } from '../helpers/local-ring.ts';
import { captureLogs } from '../helpers/log-capture.ts';
import { waitFor } from '../helpers/ring-fixture.ts';
import net from 'node:net';

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
let ring: LocalRing | null = null;
let dir = '';

afterEach(async () => {
  await ring?.stop();
  ring = null;
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Plant a datakey of the host's own key in node-1's blob directory; returns P and the store id. */
async function plant(r: LocalRing): Promise<{ plaintext: Buffer; nodeId: Buffer; keyArn: string }> {
  const own = r.kms!.kms.createKey({
    description: "the host's own key",
    policy: { allowWithoutRecipient: ['GenerateDataKey', 'Decrypt', 'Encrypt'], recipientConditions: {} },
  });
  const nodeId = Buffer.alloc(16, 0x5a);
  const sdk = hostKmsClient(r.kms!);
  try {
    const gen = await sdk.send(new GenerateDataKeyCommand({ KeyId: own.arn, KeySpec: 'AES_256', EncryptionContext: { 'ekv:store': nodeId.toString('hex') } }));
    const data = join(r.dir, 'node-1', 'data');
    for (const name of readdirSync(data)) if (name.startsWith('wal-') || name.startsWith('snap-')) unlinkSync(join(data, name));
    writeFileSync(join(data, 'datakey'), cbor.encode({ v: 1, nodeId, keyId: own.arn, ciphertextBlob: Buffer.from(gen.CiphertextBlob!) }));
    return { plaintext: Buffer.from(gen.Plaintext!), nodeId, keyArn: own.arn };
  } finally {
    sdk.destroy();
  }
}

async function startRing(seam: boolean, logger: ReturnType<typeof captureLogs>['logger']): Promise<LocalRing> {
  dir = shortTempDir('ekv-pdk-');
  return startLocalRing({ dir, nodes: 1, replicas: 1, logger, ...(seam ? { imageSettings: { testUnsafeSkipKeyIdCheck: true } } : {}) });
}

/** Restart node-1's enclave (kill -9; LocalNode launches it again from the same image). */
function restart(r: LocalRing): void {
  process.kill(r.nodes[0]!.enclave!.pid, 'SIGKILL');
}

describe('a datakey planted by the host, made under a KMS key of its own', () => {
  it('is refused: the enclave never starts on it (KMS_WRONG_KEY) and seals nothing under it', async () => {
    const { logs, logger } = captureLogs();
    ring = await startRing(false, logger);
    const before = logs.length;
    await plant(ring);
    restart(ring);
    const fatal = await waitFor('the relaunched enclave to fail', 45_000, async () =>
      logs.slice(before).find((l) => l.msg === 'enclave failed to start') ?? 'not yet');
    expect(JSON.stringify(fatal)).toMatch(/KMS_WRONG_KEY/);
    expect(logs.slice(before).some((l) => l.msg === 'sealed state recovered')).toBe(false);
    const data = join(ring.dir, 'node-1', 'data');
    expect(readdirSync(data).filter((n) => n.startsWith('wal-') || n.startsWith('snap-'))).toEqual([]);
  });

  it('control: with the KeyId check switched off (test seam image), the planted key is accepted and the host reads a sealed value', async () => {
    const { logs, logger } = captureLogs();
    ring = await startRing(true, logger);
    const before = logs.length;
    const planted = await plant(ring);
    restart(ring);
    await waitFor('the relaunched enclave to recover', 20_000, async () =>
      logs.slice(before).find((l) => l.msg === 'sealed state recovered') ?? 'not yet');
    const data = join(ring.dir, 'node-1', 'data');
    await ring.stop();
    ring = null;
    // The host opens the node's sealed log with the data key it planted.
    const socketPath = join(dir, 'peek.sock');
    const store = await startBlobStore({ socketPath, dir: data, fsync: false });
    const blobs = createBlobClient({ connect: () => net.connect(socketPath) });
    try {
      const { recovered } = await SealedStore.open({ blobs, dataKey: planted.plaintext, nodeId: planted.nodeId });
      // The node sealed its identity key under the planted data key: the host now holds the key that the
      // node's attestation documents vouch for, and can impersonate it to clients and peers.
      const ids = recovered.records.map((r) => decodeCbor(r) as unknown[]).filter((r) => r[0] === 'id');
      expect(ids).toHaveLength(1);
      expect(ids[0]![1]).toBeInstanceOf(Uint8Array);
    } finally {
      blobs.close();
      await store.close();
    }
  });
});
