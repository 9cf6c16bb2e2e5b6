// review-4 A1 on a real node: a closed, sealed ring whose image names the local user's recovery key as its
// one recovery member (ekv up's default). Anonymous clients and a principal with no operator right get the
// ring and serving state from `status`, no key count, and no metrics; the recovery member gets both; `ekv
// status` uses the recovery.key beside the cluster file by default (the local user is the ring's operator),
// and shows `keys -` under an identity without the right.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recoveryKeyFile, startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { generateIdentity, loadIdentity, saveIdentity, toPrincipalSigner } from '../client/identity.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));
let ring: LocalRing;
let dir: string;
const clients: EkvClient[] = [];

beforeAll(async () => {
  dir = shortTempDir('ekv-op-');
  ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger: testLogger(), access: 'closed', recovery: true });
}, 120_000);

afterAll(async () => {
  for (const c of clients) await c.close();
  await ring?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function client(identityFile: string | null): Promise<EkvClient> {
  const identity = identityFile === null ? undefined : toPrincipalSigner(loadIdentity(identityFile));
  const kv = await connect({ cluster: ring.clusterFile, trustClusterFile: true, floor: false, ...(identity ? { identity } : {}) });
  clients.push(kv);
  return kv;
}

function ekvStatus(env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [ekvBin, 'status', '-c', ring.clusterFile, '--trust-cluster-file', '--json'], { timeout: 30_000, env }, (err, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout) as Record<string, unknown>);
      } catch {
        reject(new Error(`ekv status: ${String(err)} ${stderr}`));
      }
    });
  });
}

describe('status and metrics in a closed ring (review-4 A1)', () => {
  it('anonymous and a principal without the operator right: serving state, no counts, metrics FORBIDDEN', async () => {
    const aliceFile = join(dir, 'alice.key');
    saveIdentity(aliceFile, generateIdentity('ed25519'));
    const addr = ring.cluster.nodes[0]?.addr as string;
    for (const kv of [await client(null), await client(aliceFile)]) {
      const st = await kv.node(addr).call('status', {});
      expect(st.serving).toBe(true);
      expect(st.ringId).toBeInstanceOf(Uint8Array);
      expect(Array.isArray(st.successors)).toBe(true);
      expect(st.keys).toBeUndefined();
      expect(st.bytes).toBeUndefined();
      expect(st.position).toBeUndefined();
      const m = await kv.node(addr).call('metrics', {}).then(() => 'OK', (e: unknown) => (e instanceof EkvError ? e.code : String(e)));
      expect(m).toBe('FORBIDDEN');
    }
    // `ekv status` under alice's identity: the ring, no key count.
    const out = await ekvStatus({ ...process.env, EKV_IDENTITY: aliceFile });
    const node = (out.nodes as Array<Record<string, unknown>>)[0];
    expect(node).toMatchObject({ ok: true, serving: true });
    expect(node?.keys).toBeUndefined();
  }, 60_000);

  it('the recovery member (the local user) gets the counts and the snapshot; ekv status uses its key by default', async () => {
    const op = await client(join(dir, recoveryKeyFile));
    const addr = ring.cluster.nodes[0]?.addr as string;
    const st = await op.node(addr).call('status', {});
    expect(typeof st.keys).toBe('number');
    expect(typeof st.bytes).toBe('number');
    const m = await op.node(addr).call('metrics', {});
    expect(m.m).toMatchObject({ v: 1 });
    const env = { ...process.env };
    delete env.EKV_IDENTITY;
    const out = await ekvStatus(env);
    expect(typeof (out.nodes as Array<Record<string, unknown>>)[0]?.keys).toBe('number');
  }, 60_000);
});
