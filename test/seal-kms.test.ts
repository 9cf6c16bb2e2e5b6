// End to end: a data key from the emulated KMS (Recipient, real SDK) seals the log; a restarted
// enclave of the same image recovers it; another image is refused; the host's files hold no plaintext.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadOrCreateDataKey } from '../enclave/seal/data-key.ts';
import { KmsError } from '../enclave/seal/errors.ts';
import { SealedStore } from '../enclave/seal/log.ts';
import { startKmsEnv, type KmsEnv } from './helpers/kms-env.ts';
import { startSealEnv, type SealEnv } from './helpers/seal-env.ts';

let kms: KmsEnv;
let seal: SealEnv;
beforeAll(async () => {
  kms = await startKmsEnv();
  seal = await startSealEnv();
});
afterAll(async () => {
  await kms.close();
  await seal.cleanup();
});

describe('sealed persistence through KMS', () => {
  it('first boot creates the key, a reboot of the same image recovers every record, another image is denied', async () => {
    const boot = () => loadOrCreateDataKey({ blobs: seal.client(), kms: kms.enclave(), attest: kms.attestGood });
    const first = await boot();
    expect(first.created).toBe(true);
    const { store } = await SealedStore.open({ blobs: seal.client(), dataKey: first.dataKey, nodeId: first.nodeId });
    await Promise.all(Array.from({ length: 100 }, (_, i) => store.append(Buffer.from(`k${i}=top-secret-${i}`))));
    await store.close();

    const second = await boot();
    expect(second.created).toBe(false);
    expect(second.dataKey.equals(first.dataKey)).toBe(true);
    const { recovered } = await SealedStore.open({ blobs: seal.client(), dataKey: second.dataKey, nodeId: second.nodeId });
    expect(recovered.records.map(String)).toEqual(Array.from({ length: 100 }, (_, i) => `k${i}=top-secret-${i}`));

    const other = loadOrCreateDataKey({ blobs: seal.client(), kms: kms.enclave(), attest: kms.attestOther });
    await expect(other).rejects.toBeInstanceOf(KmsError);
    await expect(other).rejects.toMatchObject({ code: 'KMS_DENIED' });

    for (const name of readdirSync(seal.dir)) {
      const bytes = readFileSync(join(seal.dir, name));
      expect(bytes.includes('top-secret')).toBe(false);
      expect(bytes.includes(first.dataKey)).toBe(false);
      expect(bytes.includes(first.dataKey.toString('hex'))).toBe(false);
      expect(bytes.includes(first.dataKey.toString('base64'))).toBe(false);
    }
  });
});
