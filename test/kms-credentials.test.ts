// Issue 10, item 7: the enclave has no network, so the host hands it the instance role's credentials.
// The emulated IMDS (IMDSv2) issues rotating credentials; the emulated KMS refuses requests without
// credentials, with credentials it never issued, and with expired ones, as AWS KMS does; the host keeps
// aws-credentials.json fresh in the blob store; and a node keeps working across rotations (a relaunched
// enclave, whose boot credentials have long expired, unseals with the current ones). A node whose host
// hands it no credentials, or only expired ones, is refused by KMS (KMS_CREDENTIALS).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { GenerateRandomCommand, KMSClient } from '@aws-sdk/client-kms';
import { afterAll, describe, expect, it } from 'vitest';
import { connect } from '../client/index.ts';
import { localBlobStore, kmsEnv } from '../cli/local/kms.ts';
import { LocalNode } from '../cli/local/node.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { startEmulatedImds } from '../emulator/imds.ts';
import { enclaveKeyPolicy, startEmulatedKms } from '../emulator/kms.ts';
import { parseHostCredentials } from '../enclave/seal/credentials.ts';
import { startCredentialRefresher } from '../host/credentials.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';
import { captureLogs } from './helpers/log-capture.ts';
import { sleep, waitFor } from './helpers/ring-fixture.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function rawPost(url: string, headers: Record<string, string>): Promise<{ status: number; type: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'TrentService.GenerateRandom', ...headers } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String((JSON.parse(body) as { __type?: string }).__type ?? 'OK') }));
    });
    req.on('error', reject);
    req.end('{"NumberOfBytes":8}');
  });
}

describe('the emulated KMS checks credentials issued by the emulated IMDS', () => {
  it('refuses none, unknown and expired credentials, and accepts the current ones', async () => {
    const imds = await startEmulatedImds({ lifetimeMs: 60_000, rotateEveryMs: 60_000 });
    const kms = await startEmulatedKms({ keyPolicy: enclaveKeyPolicy({ pcr0: '00' }), verifyRecipient: () => Promise.reject(new Error('unused')), credentials: imds.registry });
    cleanups.push(() => kms.close(), () => imds.close());
    const random = async (creds: { accessKeyId: string; secretAccessKey: string; sessionToken?: string }) => {
      const c = new KMSClient({ endpoint: kms.url, region: 'us-east-1', credentials: creds, maxAttempts: 1 });
      try {
        return await c.send(new GenerateRandomCommand({ NumberOfBytes: 8 })).then(() => 'OK', (e: Error) => e.name);
      } finally {
        c.destroy();
      }
    };
    expect(await rawPost(kms.url, {})).toEqual({ status: 403, type: 'MissingAuthenticationTokenException' });
    const first = imds.current();
    expect(await random(first)).toBe('OK');
    expect(await random({ ...first, sessionToken: 'forged' })).toBe('UnrecognizedClientException');
    expect(await random({ accessKeyId: 'ASIAHOSTMADEUPKEY000', secretAccessKey: 'x', sessionToken: 't' })).toBe('UnrecognizedClientException');
    imds.rotate();
    expect(await random(first)).toBe('ExpiredTokenException');
    expect(await random(imds.current())).toBe('OK');
  });
});

describe('the enclave reads the host\'s credentials blob strictly', () => {
  const bytes = (x: unknown) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x));
  it('takes IMDS\'s JSON and refuses anything else with KMS_CREDENTIALS', () => {
    const good = { Code: 'Success', AccessKeyId: 'ASIA1234', SecretAccessKey: 's', Token: 't', Expiration: '2030-01-01T00:00:00Z' };
    expect(parseHostCredentials(bytes(good))).toEqual({ accessKeyId: 'ASIA1234', secretAccessKey: 's', sessionToken: 't', expiration: new Date('2030-01-01T00:00:00Z') });
    for (const bad of ['{', '[]', { ...good, AccessKeyId: 7 }, { ...good, SecretAccessKey: '' }, { ...good, Expiration: 'soon' }, 'x'.repeat(9000)]) {
      expect(() => parseHostCredentials(bytes(bad))).toThrow(expect.objectContaining({ code: 'KMS_CREDENTIALS' }));
    }
    // An inherited property is not a field (own properties only).
    expect(() => parseHostCredentials(bytes('{"__proto__": {"AccessKeyId": "A", "SecretAccessKey": "s"}}'))).toThrow(/AccessKeyId/);
  });
});

describe('the host keeps the role credentials fresh for its enclave', () => {
  it('fetches them by IMDSv2 and rewrites aws-credentials.json as they rotate', async () => {
    const imds = await startEmulatedImds({ lifetimeMs: 2000, rotateEveryMs: 500 });
    const dir = shortTempDir('ekv-cred-');
    const refresher = startCredentialRefresher({ imdsUrl: imds.url, dataDir: dir, logger: testLogger() });
    cleanups.push(() => refresher.close(), () => imds.close(), () => rmSync(dir, { recursive: true, force: true }));
    await refresher.refresh();
    const read = () => parseHostCredentials(readFileSync(join(dir, 'aws-credentials.json')));
    const first = read();
    expect(first.accessKeyId).toMatch(/^ASIA/);
    expect(first.sessionToken).toBeTruthy();
    expect(first.expiration!.getTime()).toBeGreaterThan(Date.now());
    const next = await waitFor('a rotated set', 10_000, async () => (read().accessKeyId !== first.accessKeyId ? read() : 'same set'));
    expect(next.expiration!.getTime()).toBeGreaterThan(first.expiration!.getTime());
  });
});

describe('a sealed node across credential rotations', () => {
  let ring: LocalRing;
  let dir: string;
  const { logs, logger } = captureLogs();

  it('unseals again after its boot credentials expired, with the current ones', async () => {
    dir = shortTempDir('ekv-rot-');
    cleanups.push(async () => {
      await ring?.stop();
      rmSync(dir, { recursive: true, force: true });
    });
    ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger, imds: { lifetimeMs: 2500, rotateEveryMs: 800 } });
    const kv = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
    try {
      await kv.put('across-rotation', 'still here');
    } finally {
      await kv.close();
    }
    const bootCreds = parseHostCredentials(readFileSync(join(dir, 'node-1', 'data', 'aws-credentials.json')));
    await sleep(Math.max(0, bootCreds.expiration!.getTime() - Date.now()) + 300);
    expect(ring.kms!.imds.registry.lookup(bootCreds.accessKeyId)!.expiresAt).toBeLessThan(Date.now()); // expired by now
    const before = logs.length;
    process.kill(ring.nodes[0]!.enclave!.pid, 'SIGKILL');
    const recovered = await waitFor('the relaunched enclave to unseal', 20_000, async () =>
      logs.slice(before).find((l) => l.msg === 'sealed state recovered') ?? logs.slice(before).find((l) => l.msg === 'enclave failed to start')?.msg as string ?? 'not yet');
    expect(recovered).toMatchObject({ created: false });
    const again = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
    try {
      const v = await waitFor('the key back', 20_000, async () => again.get('across-rotation').then((b) => ({ value: b.toString() }), (e: Error) => e.message));
      expect(v.value).toBe('still here');
    } finally {
      await again.close();
    }
  });

  it('is refused by KMS when its host hands it no credentials, or expired ones', async () => {
    const info = ring.kms!.info;
    const start = async (name: string, prepare: (dataDir: string) => void) => {
      const node = new LocalNode({
        name, dir: join(dir, name), imagePath: ring.imagePath, ca: ring.ca, listenPort: 0, httpPort: 0, logger,
        enclaveEnv: () => ({ EKV_JOIN: '', ...kmsEnv(info) }), startBlobStore: localBlobStore(logger), // no imdsUrl
      });
      prepare(join(dir, name, 'data'));
      const err = await node.start().then(() => null, (e: unknown) => e as Error);
      await node.stop();
      return [err?.message, JSON.stringify(logs.find((l) => l.node === name && l.msg === 'enclave failed to start') ?? null)];
    };
    const [noneErr, noneLog] = await start('no-creds', () => undefined);
    expect(noneErr).toMatch(/exited during start-up/);
    expect(noneLog).toMatch(/KMS_CREDENTIALS/);
    const stale = readFileSync(join(dir, 'node-1', 'data', 'aws-credentials.json'));
    ring.kms!.imds.rotate(); // every set issued so far is expired now
    const [staleErr, staleLog] = await start('stale-creds', (d) => {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'aws-credentials.json'), stale);
    });
    expect(staleErr).toMatch(/exited during start-up/);
    expect(staleLog).toMatch(/KMS_CREDENTIALS/);
    expect(staleLog).toMatch(/ExpiredToken/);
  });
});
