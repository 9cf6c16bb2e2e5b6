/**
 * The extra runs of `npm run bench:kv`, each against its own baseline in the same run:
 * - sealed: put-heavy throughput with sealing on (the default node) vs a node started with --no-seal;
 * - recovery: time for a sealed node to come back with every key after its enclave is killed, per 100,000 keys;
 * - authenticated: gets by a principal on a namespace whose ACL has 1,000 entries vs anonymous gets.
 */
import { connect, type EkvClient } from '../../../client/index.ts';
import { toPrincipalSigner } from '../../../client/identity.ts';
import { setupAclNamespace } from './acl-setup.ts';
import type { EkvNodeProcess } from './ekv-node.ts';
import { preload, runMix, type KvConnection, type LoadSettings } from './harness.ts';
import type { RunFigures } from './stats.ts';

export const getsOnly = { name: 'gets 100/0', getFraction: 1 };

export function sdkConnection(c: EkvClient): KvConnection {
  return { get: (k) => c.get(k), put: (k, v) => c.put(k, v), close: () => c.close() };
}

/** Anonymous gets vs a reader's gets on a namespace with `aclEntries` ACL entries (same node, same settings). */
export async function authenticatedRun(
  clusterFile: string, s: LoadSettings, seed: number, progress: (l: string) => void, aclEntries = 1000,
): Promise<{ anonymous: RunFigures; authenticated: RunFigures; ratio: number }> {
  progress(`auth: creating a namespace with an ACL of ${aclEntries} entries and ${s.keys} keys`);
  const acl = await setupAclNamespace({ cluster: clusterFile, entries: s.keys, aclEntries, valueBytes: s.valueBytes });
  try {
    const index = (k: Buffer) => Number(k.toString().slice(-8)) % acl.keys.length;
    const readers: KvConnection[] = [];
    const anons: KvConnection[] = [];
    for (let i = 0; i < s.connections; i++) {
      const anon = await connect({ cluster: clusterFile, trustClusterFile: true, timeoutMs: 30_000 });
      anons.push(sdkConnection(anon));
    }
    // One reader client per connection, as for the anonymous side.
    for (let i = 0; i < s.connections; i++) {
      const r = i === 0 ? acl.readerKv : await connect({ cluster: clusterFile, trustClusterFile: true, timeoutMs: 30_000, identity: toPrincipalSigner(acl.reader) });
      readers.push({ get: (k) => r.get(acl.keys[index(k)] as string), put: () => Promise.reject(new Error('read only')), close: () => r.close() });
    }
    await preload(anons, s, Buffer.alloc(s.valueBytes, 0x62));
    progress(`auth: anonymous gets, ${s.clients} clients`);
    const anonymous = await runMix(anons, s, getsOnly, seed);
    progress(`auth: authenticated gets (ACL of ${aclEntries} entries), ${s.clients} clients`);
    const authenticated = await runMix(readers, s, getsOnly, seed);
    await Promise.all(anons.map((c) => c.close()));
    return { anonymous, authenticated, ratio: authenticated.opsPerSec / anonymous.opsPerSec };
  } finally {
    await acl.close();
  }
}

/** Preload `keys` keys, kill -9 the enclave, and time until the relaunched node serves all of them again. */
export async function recoveryRun(node: EkvNodeProcess, keys: number, progress: (l: string) => void): Promise<{ keys: number; recoveryMs: number; perHundredThousandMs: number }> {
  const kv = await connect({ cluster: node.clusterFile, trustClusterFile: true, timeoutMs: 60_000 });
  const s: LoadSettings = { clients: 64, connections: 1, seconds: 1, ops: null, valueBytes: 100, keys, warmupSeconds: 0 };
  progress(`recovery: writing ${keys} keys (sealed)`);
  await preload([sdkConnection(kv)], s, Buffer.alloc(100, 0x63));
  const before = await kv.node(node.addr).call('status', {});
  await kv.close();
  const pid = node.pids.enclave;
  if (!pid) throw new Error('no enclave pid');
  progress(`recovery: kill -9 enclave ${pid} (holding ${String(before.keys)} keys)`);
  const t0 = Date.now();
  process.kill(pid, 'SIGKILL');
  for (;;) {
    await new Promise((r) => setTimeout(r, 100));
    const c = await connect({ cluster: node.clusterFile, trustClusterFile: true, timeoutMs: 2000 });
    try {
      const st = await c.node(node.addr).call('status', {});
      if (st.serving === true && st.keys === before.keys) break;
    } catch {
      // not back yet
    } finally {
      await c.close();
    }
    if (Date.now() - t0 > 300_000) throw new Error('the node did not come back within 300 s');
  }
  const recoveryMs = Date.now() - t0;
  progress(`recovery: back with ${String(before.keys)} keys after ${recoveryMs} ms (includes the 500 ms relaunch delay)`);
  return { keys, recoveryMs, perHundredThousandMs: (recoveryMs * 100_000) / keys };
}
