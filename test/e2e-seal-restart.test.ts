// Sealed persistence end to end (issue 5): a ring of emulated enclaves sealing through the emulated KMS.
// With replication factor 1 every key lives on exactly one node, so a key that is back after a restart
// can only have come from that node's sealed state, never from a replica.
// - one enclave killed with SIGKILL and relaunched: same ring id, every acknowledged key back;
// - the whole ring stopped and started again on the same directory: same ids, every key back;
// - the host's stored blobs hold no plaintext key or value (raw, hex or base64).
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import type { LocalNode } from '../cli/local/node.ts';
import { shortTempDir } from './helpers/local-ring.ts';
import { waitFor } from './helpers/ring-fixture.ts';
import { captureLogs } from './helpers/log-capture.ts';

const nodeCount = 3;

/** Every log record of the launcher, hosts, KMS and (forwarded) enclaves, parsed. */
const { logs, logger } = captureLogs();

let dir: string;
let ring: LocalRing;

/** The model of acknowledged state: key -> value, or null for an acknowledged delete. */
const model = new Map<string, string | null>();
const marker = `ekvcanary${randomBytes(4).toString('hex')}`;

function start(): Promise<LocalRing> {
  return startLocalRing({ dir, nodes: nodeCount, replicas: 1, logger });
}

beforeAll(async () => {
  dir = shortTempDir('ekv-sr-');
  ring = await start();
  const kv = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
  try {
    const keys = Array.from({ length: 90 }, (_, i) => `${marker}-key-${i}`);
    await Promise.all(keys.map(async (k, i) => {
      expect(await kv.put(k, `${marker}-value-${i}-first`)).toBe(1);
      model.set(k, `${marker}-value-${i}-first`);
    }));
    // Later versions and deletes must come back as themselves, not as the first write.
    await Promise.all(keys.slice(0, 30).map(async (k, i) => {
      expect(await kv.put(k, `${marker}-value-${i}-second`)).toBe(2);
      model.set(k, `${marker}-value-${i}-second`);
    }));
    await Promise.all(keys.slice(30, 40).map(async (k) => {
      expect(await kv.delete(k)).toEqual({ deleted: true, version: 2 });
      model.set(k, null);
    }));
  } finally {
    await kv.close();
  }
});

afterAll(async () => {
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Status {
  id: string;
  keys: number;
  serving: boolean;
  ring: string;
}

async function statusOf(kv: EkvClient, addr: string): Promise<Status> {
  const s = await kv.node(addr).call('status', {});
  return { id: Buffer.from(s.id as Uint8Array).toString('hex'), keys: s.keys as number, serving: s.serving === true, ring: String(s.ring) };
}

async function withClient<T>(body: (kv: EkvClient) => Promise<T>): Promise<T> {
  const kv = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
  try {
    return await body(kv);
  } finally {
    await kv.close();
  }
}

/** Read every key of the model; return the mismatches (empty when every acknowledged write is back). */
async function mismatches(kv: EkvClient): Promise<string[]> {
  const bad: string[] = [];
  await Promise.all([...model].map(async ([k, want]) => {
    try {
      const got = (await kv.get(k)).toString();
      if (got !== want) bad.push(`${k}: got ${got}, want ${want ?? 'NOT_FOUND'}`);
    } catch (err) {
      const code = err instanceof EkvError ? err.code : String(err);
      if (!(want === null && code === 'NOT_FOUND')) bad.push(`${k}: ${code}, want ${want ?? 'NOT_FOUND'}`);
    }
  }));
  return bad;
}

/** The enclave's 'sealed state recovered' records of one node, logged after `from` (an index into logs). */
function recoveries(node: string, from: number): Array<Record<string, unknown>> {
  return logs.slice(from).filter((r) => r.node === node && r.msg === 'sealed state recovered');
}

let victim: LocalNode;

describe('sealed state survives enclave restarts', () => {
  // The relaunched enclave is the same node: its sealed state gives it back its identity key (so its ring
  // id) and its keys before it is reachable at all. Checked through `status`, which answers while joining.
  it('an enclave killed with SIGKILL is relaunched with the same ring id and its keys, from its sealed state', async () => {
    // Ring positions are random: a node's arc can be too small to own any of 90 keys, so take the
    // node that owns the most (with R = 1 its keys can come back only from its own sealed state).
    const counts = await withClient((kv) => Promise.all(ring.nodes.map((n) => statusOf(kv, n.addr))));
    victim = ring.nodes[counts.indexOf(counts.reduce((a, b) => (b.keys > a.keys ? b : a)))] as LocalNode;
    const node = victim;
    const before = await withClient((kv) => statusOf(kv, node.addr));
    expect(before.keys).toBeGreaterThan(0);
    const oldPid = node.enclave?.pid as number;
    const logMark = logs.length;
    process.kill(oldPid, 'SIGKILL');

    const after = await waitFor(`${node.name} to answer again`, 30_000, async () => {
      if (!node.enclave || node.enclave.pid === oldPid) return 'not relaunched yet';
      return withClient((kv) => statusOf(kv, node.addr)).catch((err: unknown) => `not answering: ${(err as Error).message}`);
    });
    expect(node.restarts).toBe(1);
    expect(after.id).toBe(before.id);
    // Right when it answers again it holds as many keys as before, and no replica holds them (R = 1).
    expect(after.keys).toBe(before.keys);
    const rec = recoveries(node.name, logMark);
    expect(rec).toHaveLength(1);
    expect(rec[0]).toMatchObject({ created: false, reset: null });
    expect(rec[0]?.records as number).toBeGreaterThan(0); // the data core's records (configurations, data, sessions)
  });

  // The others still list its id at its address; a joining node looks up successor(self.id + 1), so it
  // finds the node after itself rather than its own old entry.
  it('... and rejoins the ring and serves every acknowledged key again', async () => {
    const node = victim;
    await waitFor(`${node.name} to serve again`, 15_000, async () => {
      const s = await withClient((kv) => statusOf(kv, node.addr)).catch((err: unknown) => `${(err as Error).message}`);
      return typeof s === 'string' || !s.serving ? `not serving (${typeof s === 'string' ? s : s.ring})` : s;
    });
    expect(await withClient(mismatches)).toEqual([]);
  });

  it('the whole ring stopped and started again on the same directory: same ids, every key back', async () => {
    const ids = await withClient((kv) => Promise.all(ring.nodes.map(async (n) => [n.addr, (await statusOf(kv, n.addr)).id] as const)));
    await ring.stop();
    const logMark = logs.length;
    ring = await start();

    expect(ring.nodes.map((n) => n.addr)).toEqual(ids.map(([a]) => a)); // ring.json kept the ports
    const now = await withClient((kv) => Promise.all(ring.nodes.map(async (n) => [n.addr, (await statusOf(kv, n.addr)).id] as const)));
    expect(now).toEqual(ids);
    for (const n of ring.nodes) {
      const rec = recoveries(n.name, logMark);
      expect(rec, n.name).toHaveLength(1);
      expect(rec[0]).toMatchObject({ created: false, reset: null });
      expect(rec[0]?.records as number).toBeGreaterThan(0);
    }
    expect(await withClient(mismatches)).toEqual([]);
  });
});

describe('what the host stores', () => {
  /** Every file under each node's data directory (the sealed-blob store), with its bytes. */
  function storedBlobs(): Array<{ path: string; bytes: Buffer }> {
    const out: Array<{ path: string; bytes: Buffer }> = [];
    const walk = (d: string) => {
      for (const name of readdirSync(d)) {
        const p = join(d, name);
        if (statSync(p).isDirectory()) walk(p);
        else out.push({ path: p, bytes: readFileSync(p) });
      }
    };
    for (const n of ring.nodes) walk(join(dir, n.name, 'data'));
    return out;
  }

  /** The forms a plaintext could take on disk: raw, hex (either case), base64 at each of the 3 alignments. */
  function forms(text: string): Buffer[] {
    const raw = Buffer.from(text, 'utf8');
    const out = [raw, Buffer.from(raw.toString('hex')), Buffer.from(raw.toString('hex').toUpperCase())];
    for (let skip = 0; skip < 3; skip++) {
      // Drop the last (possibly padded) base64 quantum so the needle matches inside a longer encoding.
      const b64 = raw.subarray(skip).toString('base64');
      out.push(Buffer.from(b64.slice(0, Math.floor((b64.length - 4) / 4) * 4)));
    }
    return out.filter((f) => f.length >= 12);
  }

  it('holds no plaintext key or value, in raw, hex or base64 form', () => {
    const blobs = storedBlobs();
    // The check is not vacuous: every node stored its data key and a write-ahead log.
    for (const n of ring.nodes) {
      const mine = blobs.filter((b) => b.path.startsWith(join(dir, n.name, 'data')));
      expect(mine.some((b) => b.path.endsWith('/datakey')), n.name).toBe(true);
      expect(mine.filter((b) => /\/wal-[0-9a-f]{16}$/.test(b.path)).length, n.name).toBeGreaterThan(0);
    }
    expect(blobs.reduce((s, b) => s + b.bytes.length, 0)).toBeGreaterThan(model.size * 40);

    const needles = [marker, ...[...model.keys()], ...[...model.values()].filter((v): v is string => v !== null)];
    const found: string[] = [];
    for (const text of needles) {
      for (const form of forms(text)) {
        for (const b of blobs) if (b.bytes.includes(form)) found.push(`${text} (${form.toString().slice(0, 24)}) in ${b.path}`);
      }
    }
    expect(found).toEqual([]);
  });
});
