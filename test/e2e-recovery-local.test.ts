// `ekv up`'s local recovery member (issue 12, section 2; docs/recovery.md), and the host's whole-ring rollback.
// A 2-node sealed ring started with `recovery` (as `ekv up` does): DIR/recovery.key is its one member (k = 1).
// (1) Stopped and started again, it comes up in recovery mode and the start signs the open itself, says so,
//     and serves every acknowledged key under the new ring id (so `npm start` on an existing .ekv still works).
// (3) A one-node ring's enclave killed (kill -9) and relaunched (as systemd would): alone, it finds no live
//     member and comes back in recovery mode; `ekv up` (its relaunch watcher) reopens it likewise.
// (2) The host restores an older copy of EVERY node's directory and starts the ring: the local member's
//     last-seen record (kept when the ring stopped) shows the recovered state is older, so the start refuses
//     to reopen it and nothing is served. Control: without that record the old state is reopened and serves
//     the old value (so the check is what stops it), and under a new identity that a client pinned to the
//     ring's real current id refuses (WRONG_RING).
import { cpSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError } from '../client/index.ts';
import type { TrustPolicy } from '../client/trust.ts';
import type { LocalNode } from '../cli/local/node.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';

let dir: string;
let ring: LocalRing | null = null;
const lines: string[] = [];
const names = ['node-1', 'node-2'];

function start(): Promise<LocalRing> {
  return startLocalRing({ dir, nodes: 2, replicas: 2, logger: testLogger(), rememberTrust: false, recovery: true, progress: (l) => lines.push(l) });
}

async function get(trust: TrustPolicy, key: string): Promise<string> {
  const kv = await connect({ cluster: join(dir, 'cluster.json'), trust, timeoutMs: 5000, floor: false });
  try {
    return (await kv.get(key)).toString();
  } catch (err) {
    if (err instanceof EkvError) return err.code;
    throw err;
  } finally {
    await kv.close();
  }
}

async function put(trust: TrustPolicy, key: string, value: string): Promise<void> {
  const kv = await connect({ cluster: join(dir, 'cluster.json'), trust, floor: false });
  await kv.put(key, value);
  await kv.close();
}

beforeAll(async () => {
  dir = shortTempDir('ekv-rl-');
  ring = await start();
}, 60_000);

afterAll(async () => {
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the local recovery member', () => {
  let genOneTrust: TrustPolicy;

  it('a restarted ring comes up in recovery mode and the start reopens it itself, saying so', async () => {
    const r = ring as LocalRing;
    expect(existsSync(join(dir, 'recovery.key'))).toBe(true);
    expect(r.settings?.recoveryMembers).toHaveLength(1);
    await put(r.cluster.trust, 'local-key', 'v1');
    for (const n of names) cpSync(join(dir, n, 'data'), join(dir, 'old', n), { recursive: true, filter: (s) => !s.endsWith('.tmp') });
    await put(r.cluster.trust, 'local-key', 'v2');
    await r.stop();
    ring = null;
    expect(existsSync(join(dir, 'cluster.json.seen'))).toBe(true);
    ring = await start();
    expect(ring.recovery).toEqual({ reopened: true, waiting: false, generation: 1 });
    expect(lines.join('\n')).toMatch(/2 node\(s\) came up in recovery mode[\s\S]*reopened the ring as generation 1 .* signed by your recovery key/);
    genOneTrust = ring.cluster.trust;
    expect(genOneTrust.ringId).not.toBe(r.cluster.trust.ringId); // the cluster file pins the new id
    expect(await get(genOneTrust, 'local-key')).toBe('v2');
  });

  it('a node restarted while its ring lives, with no join address from its host, finds a live member among its sealed neighbours', async () => {
    const r = ring as LocalRing;
    await new Promise((res) => setTimeout(res, 6000)); // the neighbours are sealed within a few seconds of a change
    const node1 = r.nodes[0] as LocalNode;
    const opts = (node1 as unknown as { opts: { enclaveEnv: (s: { addr: string; relaunch: boolean }) => Record<string, string> } }).opts;
    const env = opts.enclaveEnv;
    opts.enclaveEnv = (self) => ({ ...env(self), EKV_JOIN: '' }); // the host gives no join address (a deployment's first node)
    // Down long enough for its neighbour to notice (a Chord join under an id the ring still holds is another matter).
    (node1 as unknown as { stopping: boolean }).stopping = true;
    await node1.enclave?.stop();
    await new Promise((res) => setTimeout(res, 4000));
    (node1 as unknown as { stopping: boolean }).stopping = false;
    await node1.launch();
    opts.enclaveEnv = env;
    const deadline = Date.now() + 60_000;
    let got = '';
    while (got !== 'v2' && Date.now() < deadline) {
      const kv = await connect({ nodes: [node1.addr], trust: r.cluster.trust, timeoutMs: 3000, floor: false, routing: 'any' });
      const st = await kv.node(node1.addr).call('status', {}).catch(() => null);
      expect((st?.recovery as { mode?: string } | undefined)?.mode ?? 'open').toBe('open');
      got = await kv.get('local-key').then((b) => b.toString(), (e: unknown) => (e instanceof EkvError ? e.code : String(e)));
      await kv.close();
      if (got !== 'v2') await new Promise((res) => setTimeout(res, 500));
    }
    expect(got).toBe('v2');
    expect(r.recovery.generation).toBe(1); // nobody reopened anything
  }, 90_000);

  it('older copies of every node are not reopened (the last-seen record); without the record they would be', async () => {
    await (ring as LocalRing).stop();
    ring = null;
    for (const n of names) {
      rmSync(join(dir, n, 'data'), { recursive: true, force: true });
      cpSync(join(dir, 'old', n), join(dir, n, 'data'), { recursive: true });
    }
    await expect(start()).rejects.toThrow(/not reopening: a node recovered state older than this ring last had/);
    // Control: the member forgets what it saw; the host's old copies are reopened and serve the old value ...
    rmSync(join(dir, 'cluster.json.seen'));
    ring = await start();
    expect(ring.recovery.reopened).toBe(true);
    const { ringId: _pin, ...unpinned } = ring.cluster.trust;
    expect(await get(unpinned, 'local-key')).toBe('v1');
    // ... under another identity than the ring's real generation 1, which a client pinned to it refuses.
    expect(await get(genOneTrust, 'local-key')).toBe('WRONG_RING');
  });
});

describe('a one-node ring whose enclave is killed', () => {
  it('comes back in recovery mode and is reopened by the local member; it serves again under the new ring id', async () => {
    const dir1 = shortTempDir('ekv-r1n-');
    const one = await startLocalRing({ dir: dir1, nodes: 1, replicas: 1, logger: testLogger(), rememberTrust: false, recovery: true, progress: (l) => lines.push(l) });
    try {
      const before = one.cluster.trust.ringId;
      const kv = await connect({ cluster: one.cluster, trust: one.cluster.trust, floor: false });
      await kv.put('alone', 'kept');
      await kv.close();
      process.kill(one.nodes[0]?.enclave?.pid as number, 'SIGKILL');
      const deadline = Date.now() + 60_000;
      while (one.cluster.trust.ringId === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
      expect(one.cluster.trust.ringId).not.toBe(before);
      const again = await connect({ cluster: one.cluster, trust: one.cluster.trust, floor: false, timeoutMs: 10_000 });
      expect((await again.get('alone')).toString()).toBe('kept');
      await again.close();
    } finally {
      await one.stop();
      rmSync(dir1, { recursive: true, force: true });
    }
  }, 120_000);
});
