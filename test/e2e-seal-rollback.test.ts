// Rollback (issue 5): the host keeps an old but genuine copy of one node's sealed blobs and serves it after
// a restart. Nothing in the blobs can reveal that, so the node recovers the older state under its own
// identity; the ring must still never serve data older than what it acknowledged: its replicas hold the
// newer versions. Checked for a node that rejoins (node-2) and for the node that founds the restarted
// ring (node-1), reading through that node alone and through the ring.
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { shortTempDir } from './helpers/local-ring.ts';
import { captureLogs } from './helpers/log-capture.ts';

const { logs, logger } = captureLogs();

let dir: string;
let ring: LocalRing;
const model = new Map<string, string>();
const keys = Array.from({ length: 20 }, (_, i) => `rollback-key-${i}`);
let generation = 0;

function start(): Promise<LocalRing> {
  return startLocalRing({ dir, nodes: 3, replicas: 3, logger });
}

async function withClient<T>(opts: { only?: string }, body: (kv: EkvClient) => Promise<T>): Promise<T> {
  const kv = opts.only
    ? await connect({ nodes: [opts.only], trust: ring.cluster.trust, timeoutMs: 10_000, routing: 'any' })
    : await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 10_000 });
  try {
    return await body(kv);
  } finally {
    await kv.close();
  }
}

/** Write every key once more, one at a time (so each write is its own sealed segment). */
async function writeGeneration(): Promise<void> {
  generation++;
  await withClient({}, async (kv) => {
    for (const k of keys) {
      await kv.put(k, `${k} gen ${generation}`);
      model.set(k, `${k} gen ${generation}`);
    }
  });
}

async function mismatches(kv: EkvClient): Promise<string[]> {
  const bad: string[] = [];
  await Promise.all([...model].map(async ([k, want]) => {
    const got = await kv.get(k).then((v) => v.toString(), (err: unknown) => (err instanceof EkvError ? err.code : String(err)));
    if (got !== want) bad.push(`${k}: got ${got}, want ${want}`);
  }));
  return bad.sort();
}

beforeAll(async () => {
  dir = shortTempDir('ekv-sb-');
  ring = await start();
});

afterAll(async () => {
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Keep a copy of `name`'s blobs, write a newer generation, stop the ring, put the old copy back, restart. */
async function rollBack(name: string): Promise<number> {
  await writeGeneration();
  const data = join(dir, name, 'data');
  const saved = join(dir, `${name}-old`);
  cpSync(data, saved, { recursive: true });
  await writeGeneration();
  await ring.stop();
  rmSync(data, { recursive: true, force: true });
  cpSync(saved, data, { recursive: true });
  rmSync(saved, { recursive: true, force: true });
  const mark = logs.length;
  ring = await start();
  return mark;
}

/** Roll `name` back and check reads through it alone and through the ring. */
async function neverServesOlder(name: string): Promise<void> {
  const mark = await rollBack(name);
  const rec = logs.slice(mark).find((r) => r.node === name && r.msg === 'sealed state recovered');
  // The old copy is genuine: it verifies, and the node comes back as itself with the older entries.
  expect(rec).toMatchObject({ created: false, reset: null });
  const node = ring.nodes.find((n) => n.name === name)!;
  expect(await withClient({ only: node.addr }, mismatches)).toEqual([]);
  expect(await withClient({}, mismatches)).toEqual([]);
}

describe('a node restarted from an older genuine copy of its sealed state', () => {
  // A joining node pulls its range from its successor before it serves, so the newer versions win.
  it('node-2 (rejoins through node-1): never serves the older versions', () => neverServesOlder('node-2'));

  // The founder of the restarted ring (EKV_JOIN empty) recovered sealed entries, so it does not serve until
  // the ring has formed and it has reconciled its range with its successor (newer versions win).
  it('node-1 (founds the restarted ring): never serves the older versions', () => neverServesOlder('node-1'));
});
