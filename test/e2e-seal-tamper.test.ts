// The host tampers with one node's sealed write-ahead log while its enclave is down (issue 5): it flips a
// byte of a record or of a record's length, drops a record from the middle, swaps two, or duplicates one
// (a torn tail, a cut at the end of the newest segment, is an honest crash and not refused: docs/durability.md
// T3, test/seal-append.test.ts). The relaunched
// enclave must detect it (a typed SealError code in its log), discard that state rather than serve it (it
// comes back empty, under a new identity, so a new ring id), and the ring must refill it from replicas:
// every acknowledged key stays readable with its latest value, through that node and through the ring.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import type { LocalNode } from '../cli/local/node.ts';
import { shortTempDir } from './helpers/local-ring.ts';
import { unsettled, waitFor, type NodeView } from './helpers/ring-fixture.ts';
import { idFromBytes } from '../enclave/ring/index.ts';
import { captureLogs } from './helpers/log-capture.ts';
import { flipRecordByte, rewriteRecords, walRecords, type WalRecord } from './helpers/wal-files.ts';

const { logs, logger } = captureLogs();

let dir: string;
let ring: LocalRing;
let kv: EkvClient;
const model = new Map<string, string>();
const keys = Array.from({ length: 24 }, (_, i) => `tamper-key-${i}`);
let round = 0;

beforeAll(async () => {
  dir = shortTempDir('ekv-st-');
  ring = await startLocalRing({ dir, nodes: 3, replicas: 3, logger });
  kv = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
  await Promise.all(keys.map(async (k) => {
    await kv.put(k, `${k} v0`);
    model.set(k, `${k} v0`);
  }));
});

afterAll(async () => {
  await kv?.close();
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function statusOf(addr: string): Promise<NodeView> {
  const c = await connect({ nodes: [addr], trust: ring.cluster.trust, timeoutMs: 3000, routing: 'any' });
  try {
    const s = await c.node(addr).call('status', {});
    const ref = (x: unknown) => ((x as { addr?: string } | null)?.addr) ?? null;
    return {
      addr, ok: true, id: idFromBytes(s.id as Uint8Array), ring: String(s.ring), serving: s.serving === true,
      predecessor: ref(s.predecessor), successors: (s.successors as unknown[]).map(ref).filter((a): a is string => a !== null),
      keys: s.keys as number, lookups: 0, hops: 0, forwards: 0,
    };
  } catch (err) {
    return { addr, ok: false, error: (err as Error).message, id: null, ring: '?', serving: false, predecessor: null, successors: [], keys: 0, lookups: 0, hops: 0, forwards: 0 };
  } finally {
    await c.close();
  }
}

/** The mismatches between the model and what a client reads (empty: every acknowledged write is there). */
async function mismatches(c: EkvClient): Promise<string[]> {
  const bad: string[] = [];
  await Promise.all([...model].map(async ([k, want]) => {
    const got = await c.get(k).then((v) => v.toString(), (err: unknown) => (err instanceof EkvError ? err.code : String(err)));
    if (got !== want) bad.push(`${k}: got ${got}, want ${want}`);
  }));
  return bad;
}

/** The node's log records at warn level or above since `from`, one JSON line each (for failure messages). */
function problems(name: string, from: number): string {
  return logs.slice(from).filter((r) => r.node === name && (r.level as number) >= 40).map((r) => JSON.stringify(r).slice(0, 400)).join('\n');
}

/** The tamper gets the records of the newest segment (the writes of this round: each relaunch starts one). */
type Tamper = (records: WalRecord[]) => void;

const tampers: Array<{ name: string; codes: string[]; tamper: Tamper }> = [
  {
    name: 'flip one byte of a record\'s ciphertext (not the last record)',
    codes: ['SEAL_CORRUPT'],
    tamper: (rs) => flipRecordByte(rs.at(-3) as WalRecord, 60),
  },
  {
    name: 'flip one byte of a record\'s length (not the last record)',
    codes: ['SEAL_CORRUPT'],
    tamper: (rs) => flipRecordByte(rs.at(-2) as WalRecord, 38),
  },
  {
    name: 'drop a record from the middle',
    codes: ['SEAL_GAP'],
    tamper: (rs) => rewriteRecords((rs[0] as WalRecord).file, (all) => all.filter((_, i) => i !== all.length - 3)),
  },
  {
    name: 'swap two records',
    codes: ['SEAL_GAP', 'SEAL_REORDERED'],
    tamper: (rs) => rewriteRecords((rs[0] as WalRecord).file, (all) => {
      const n = all.length;
      return [...all.slice(0, n - 3), all[n - 2] as Buffer, all[n - 3] as Buffer, all[n - 1] as Buffer];
    }),
  },
  {
    name: 'duplicate a record',
    codes: ['SEAL_REPLAYED'],
    tamper: (rs) => rewriteRecords((rs[0] as WalRecord).file, (all) => [...all.slice(0, all.length - 1), all[all.length - 2] as Buffer, all[all.length - 1] as Buffer]),
  },
];

describe('a tampered sealed log is detected, discarded, and the node is refilled from its replicas', () => {
  it.each(tampers)('$name', async ({ codes, tamper }) => {
    round++;
    const node = ring.nodes[1] as LocalNode;
    const dataDir = join(dir, node.name, 'data');
    // Sequential writes: each its own append to the newest segment of every node's log.
    for (const k of keys.slice(0, 6)) {
      await kv.put(k, `${k} v${round}`);
      model.set(k, `${k} v${round}`);
    }
    await waitFor('the target to hold the latest writes', 10_000, async () => {
      const c = await connect({ nodes: [node.addr], trust: ring.cluster.trust, timeoutMs: 3000, routing: 'any' });
      try {
        return (await mismatches(c)).length === 0 ? true : 'not yet';
      } finally {
        await c.close();
      }
    });
    const before = await statusOf(node.addr);
    expect(before.ok).toBe(true);

    const enclave = node.enclave!;
    const logMark = logs.length;
    process.kill(enclave.pid, 'SIGKILL');
    await enclave.exited; // LocalNode relaunches it restartDelayMs (500 ms) after this: tamper at once
    const all = walRecords(dataDir);
    const newest = all.filter((r) => r.file === all.at(-1)?.file);
    expect(newest.length).toBeGreaterThanOrEqual(4);
    tamper(newest);

    const views = await waitFor('the ring to settle around the relaunched node', 30_000, async () => {
      if (node.enclave === enclave) return 'not relaunched yet';
      const vs = await Promise.all(ring.nodes.map((n) => statusOf(n.addr)));
      return unsettled(vs) ?? vs;
    }).catch((err: unknown) => {
      throw new Error(`${(err as Error).message}\n${node.name}'s warnings and errors since the kill:\n${problems(node.name, logMark)}`);
    });
    const after = views.find((v) => v.addr === node.addr) as NodeView;

    const rejected = logs.slice(logMark).filter((r) => r.node === node.name && String(r.msg ?? '').startsWith('SEALED STATE REJECTED'));
    expect(rejected).toHaveLength(1);
    expect(codes).toContain(rejected[0]?.code);
    const recovered = logs.slice(logMark).filter((r) => r.node === node.name && r.msg === 'sealed state recovered');
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toMatchObject({ records: 0, reset: rejected[0]?.code });
    // A new identity, so a new ring id: nothing of the discarded state is claimed as this node's.
    expect(after.id).not.toBe(before.id);

    // Through that node alone (it forwards or serves), and through the whole ring: the latest values.
    const direct = await connect({ nodes: [node.addr], trust: ring.cluster.trust, timeoutMs: 10_000, routing: 'any' });
    try {
      expect(await mismatches(direct)).toEqual([]);
    } finally {
      await direct.close();
    }
    expect(await mismatches(kv)).toEqual([]);
    // And it holds every key again (R = 3 on 3 nodes: every node holds every key).
    await waitFor('the target to be refilled', 15_000, async () => ((await statusOf(node.addr)).keys === model.size ? true : 'not yet'));
  });
});
