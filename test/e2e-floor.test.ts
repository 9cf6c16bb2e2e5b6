// Rollback detection by the client (issue 12, section 3) against real processes: a one-node ring (the
// single-node image serves its sealed state at once, so the host can roll the whole ring back by restoring
// an old copy of its directory: the attack the floor is for). A key written at v1, the directory copied,
// the key written at v2 and v3; the ring stopped, the old copy put back, the ring started again: it now
// answers v1. A client whose floor saw v3 (the SDK with floorFile, the CLI with its floor beside the cluster
// file, across separate invocations) refuses it with STALE; without the floor (the control: floor: false,
// --no-floor) the rolled-back value comes back as data.
import { execFile } from 'node:child_process';
import { cpSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../client/index.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));
let dir: string;
let ring: LocalRing;
let cluster: string;
const sdkFloor = () => join(dir, 'sdk.floor');

function start(): Promise<LocalRing> {
  return startLocalRing({ dir, nodes: 1, replicas: 1, logger: testLogger(), rememberTrust: false });
}

function ekv(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ekvBin, ...args, '-c', cluster, '--trust-cluster-file'], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

async function sdkPut(key: string, value: string): Promise<number> {
  const kv = await connect({ cluster, trustClusterFile: true, floorFile: sdkFloor() });
  try {
    return await kv.put(key, value);
  } finally {
    await kv.close();
  }
}

beforeAll(async () => {
  dir = shortTempDir('ekv-fl-');
  ring = await start();
  cluster = ring.clusterFile;
  expect(await sdkPut('sdk-k', 'v1')).toBe(1);
  expect(await ekv(['put', 'cli-k', 'v1'])).toMatchObject({ code: 0 });
  const data = join(dir, 'node-1', 'data');
  cpSync(data, join(dir, 'old-data'), { recursive: true, filter: (src) => !src.endsWith('.tmp') });
  for (const v of ['v2', 'v3']) {
    await sdkPut('sdk-k', v);
    expect(await ekv(['put', 'cli-k', v])).toMatchObject({ code: 0 });
  }
  expect(existsSync(`${cluster}.floor`)).toBe(true); // the CLI's floor, beside the cluster file
  // The host's rollback: the whole (one-node) ring restarted from the old genuine copy.
  await ring.stop();
  rmSync(data, { recursive: true, force: true });
  cpSync(join(dir, 'old-data'), data, { recursive: true });
  ring = await start();
}, 120_000);

afterAll(async () => {
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a client that saw v3 and is answered v1 after a rollback', () => {
  it('SDK with a floor file: a new process refuses the rolled-back value and an acknowledgement below v3 (STALE)', async () => {
    const kv = await connect({ cluster, trustClusterFile: true, floorFile: sdkFloor() });
    try {
      await expect(kv.getWithVersion('sdk-k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION', version: 3 });
      await expect(kv.put('sdk-k', 'v4')).rejects.toMatchObject({ code: 'STALE' }); // the rolled-back ring acks it at v2
    } finally {
      await kv.close();
    }
    // Control: without the floor, the rolled-back value is returned as data.
    const blind = await connect({ cluster, trustClusterFile: true, floor: false });
    try {
      expect((await blind.getWithVersion('sdk-k')).version).toBeLessThan(3);
    } finally {
      await blind.close();
    }
  });

  it('CLI across invocations: `ekv get` exits 1 with STALE; with --no-floor it prints the old value', async () => {
    const r = await ekv(['get', 'cli-k']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^STALE \(OLDER_VERSION\): .*version 3/);
    expect(r.stdout).toBe('');
    expect(await ekv(['get', 'cli-k', '--no-floor'])).toMatchObject({ code: 0, stdout: 'v1' });
  });
});
