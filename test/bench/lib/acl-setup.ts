/**
 * For `npm run bench:kv`'s authenticated run: a namespace with `entries` keys
 * (default 1,000) created through the SDK, and a reader principal granted
 * `read` on it. The bench then compares `reader` gets on `keys` (every get
 * passes the enclave's ACL check) with anonymous gets in the same run.
 *
 *   const s = await setupAclNamespace({ cluster: ring.clusterFile });
 *   ... time s.reader.get(s.keys[i]) ... ; await s.close();
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { principalFromPublicKey } from '../../../protocol/principal.ts';
import { connect, type ClusterFile, type ConnectOptions, type EkvClient } from '../../../client/index.ts';
import { generateIdentity, identityFromKey, toPrincipalSigner, type ClientIdentity } from '../../../client/identity.ts';

export interface AclBenchSetup {
  ns: string;
  keys: string[];
  owner: ClientIdentity;
  reader: ClientIdentity;
  /** Connected as the owner (all rights). */
  ownerKv: EkvClient;
  /** Connected as the reader (read only): the authenticated client to time. */
  readerKv: EkvClient;
  close(): Promise<void>;
}

export async function setupAclNamespace(o: {
  cluster: string | ClusterFile;
  ns?: string;
  entries?: number;
  valueBytes?: number;
  /** Puts in flight while filling the namespace. */
  concurrency?: number;
  /** ACL entries: the reader plus this many minus one other principals granted read (default 1). */
  aclEntries?: number;
  routing?: ConnectOptions['routing'];
}): Promise<AclBenchSetup> {
  const ns = o.ns ?? `bench-${randomBytes(4).toString('hex')}`;
  const entries = o.entries ?? 1000;
  const value = randomBytes(o.valueBytes ?? 100);
  const owner = identityFromKey(generateIdentity('ed25519'));
  const reader = identityFromKey(generateIdentity('ed25519'));
  const base = { cluster: o.cluster, trustClusterFile: true, timeoutMs: 15_000, ...(o.routing ? { routing: o.routing } : {}) };
  const ownerKv = await connect({ ...base, identity: toPrincipalSigner(owner) });
  const readerKv = await connect({ ...base, identity: toPrincipalSigner(reader) });
  try {
    const others = Array.from({ length: Math.max(0, (o.aclEntries ?? 1) - 1) }, () => ({
      subject: principalFromPublicKey(createPublicKey(generateIdentity('ed25519'))),
      rights: ['read'] as const,
    }));
    await ownerKv.acl.createNamespace(ns, others);
    await ownerKv.acl.grant(ns, reader.principal, 'read');
    const keys = Array.from({ length: entries }, (_, i) => `${ns}/k${i}`);
    let next = 0;
    const worker = async () => {
      while (next < keys.length) await ownerKv.put(keys[next++] as string, value);
    };
    await Promise.all(Array.from({ length: o.concurrency ?? 32 }, worker));
    return {
      ns, keys, owner, reader, ownerKv, readerKv,
      async close() {
        await ownerKv.close();
        await readerKv.close();
      },
    };
  } catch (err) {
    await ownerKv.close();
    await readerKv.close();
    throw err;
  }
}
