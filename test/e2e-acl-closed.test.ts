// The ring setting for keys outside any namespace, 'closed' (the production default compiled into Nitro
// images): nobody may touch them, anonymous or not, while namespaces still work for their principals.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { generateIdentity, identityFromKey, toPrincipalSigner } from '../client/identity.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';

let ring: LocalRing;
let dir: string;
let anon: EkvClient;
let alice: EkvClient;

const code = (p: Promise<unknown>) => p.then(() => 'OK', (e: unknown) => (e instanceof EkvError ? e.code : 'THROWN'));

beforeAll(async () => {
  dir = shortTempDir('ekv-cl-');
  ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger: testLogger(), access: 'closed', seal: false });
  anon = await connect({ cluster: ring.clusterFile, trustClusterFile: true });
  alice = await connect({ cluster: ring.clusterFile, trustClusterFile: true, identity: toPrincipalSigner(identityFromKey(generateIdentity('ed25519'))) });
}, 60_000);

afterAll(async () => {
  await anon?.close();
  await alice?.close();
  await ring?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("a ring whose access mode is 'closed'", () => {
  it('refuses every operation on keys outside a namespace, for anonymous clients and principals alike', async () => {
    for (const kv of [anon, alice]) {
      expect(await code(kv.put('loose-key', 'v'))).toBe('FORBIDDEN');
      expect(await code(kv.get('loose-key'))).toBe('FORBIDDEN');
      expect(await code(kv.delete('loose-key'))).toBe('FORBIDDEN');
    }
  });

  it("lets a principal create a namespace and use it, and still refuses anonymous clients there", async () => {
    await alice.acl.createNamespace('team');
    await alice.put('team/k', 'secret');
    expect((await alice.get('team/k')).toString()).toBe('secret');
    expect(await code(anon.get('team/k'))).toBe('FORBIDDEN');
    expect(await code(anon.put('team/k', 'x'))).toBe('FORBIDDEN');
  }, 30_000);
});
