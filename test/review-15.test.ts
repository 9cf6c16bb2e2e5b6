// Review 15: the enclave's boot path, what the host feeds it before it serves, and recovery mode.
//
// F1 (high): a staggered whole-ring rollback skips recovery mode. A restarting node on an image with recovery
// members asks `rcvAlive` of its candidates and counts a peer as a live member when its data core runs
// (`serving: coreRunning`). But a core that runs may still be checking its own state (it votes, acks and serves
// nothing until every other member of its ranges admitted it and none saw it behind): such a node vouches for
// nothing. The host restores an old copy of node-1 and relaunches it while node-2 and node-3 are alive (node-1
// finds a live member, starts its core and checks), then, before node-1's check reaches them, kills node-2 and
// node-3 and relaunches both from old copies of the same moment. They ask node-1, which says "serving" although it
// is itself an unproven old copy, so neither enters recovery mode: the whole ring is back on old state (v1) with
// no recovery member's signature, each node checking its witnesses only against the other old copies.
// Expected: no v1 is ever served (node-2 and node-3 find no live member and wait in recovery mode).
import { cpSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import type { TrustPolicy } from '../client/trust.ts';
import { kmsEnv, localBlobStore, type LocalKmsInfo } from '../cli/local/kms.ts';
import { LocalNode } from '../cli/local/node.ts';
import { provideRingSecret, startLocalRing, type LocalRing } from '../cli/local/ring.ts';
import { shortTempDir, testLogger } from './helpers/local-ring.ts';
import { outcome } from './helpers/outcome.ts';

const logger = testLogger();
const keys = Array.from({ length: 6 }, (_, i) => `stag-${i}`);

let dir: string;
let ring: LocalRing;
let trust: TrustPolicy;

async function client(nodes: string[], timeoutMs = 5000): Promise<EkvClient> {
  return connect({ nodes, trust, timeoutMs, floor: false, routing: 'any' });
}

async function statusOf(addr: string): Promise<Record<string, unknown> | null> {
  try {
    const kv = await client([addr], 2000);
    try {
      return await kv.node(addr).call('status', {});
    } finally {
      await kv.close();
    }
  } catch {
    return null;
  }
}

const data = (i: number) => join(dir, `node-${i}`, 'data');
const old = (i: number) => join(dir, `old-node-${i}`);

/** Kill the node's enclave (a crash, no leave), put its old copy back; launch() brings it back from that copy. */
async function killAndRestore(n: LocalNode, i: number): Promise<void> {
  (n as unknown as { stopping: boolean }).stopping = true;
  await n.enclave?.stop('SIGKILL');
  rmSync(data(i), { recursive: true, force: true });
  cpSync(old(i), data(i), { recursive: true });
  (n as unknown as { stopping: boolean }).stopping = false;
}

/** A 3-node ring with a recovery member, keys at v1 in old copies of every node taken at one idle moment, then v2. */
async function ringWithOldCopies(prefix: string): Promise<void> {
  dir = shortTempDir(prefix);
  ring = await startLocalRing({ dir, nodes: 3, replicas: 3, logger, rememberTrust: false, recovery: true });
  trust = ring.cluster.trust;
  const all = ring.nodes.map((n) => n.addr);
  const a = await client(all, 12_000);
  for (const k of keys) await a.put(k, 'v1');
  await a.close();
  // Copy every node while every position holds still (an idle ring): old copies of one moment.
  let before = await Promise.all(all.map(statusOf));
  for (const until = Date.now() + 60_000; ;) {
    await new Promise((r) => setTimeout(r, 1500));
    const now = await Promise.all(all.map(statusOf));
    if (now.every((s, i) => s && s.position === before[i]?.position)) {
      for (let i = 1; i <= 3; i++) cpSync(data(i), old(i), { recursive: true, filter: (s) => !s.endsWith('.tmp') });
      const after = await Promise.all(all.map(statusOf));
      if (after.every((s, i) => s && s.position === now[i]?.position)) break;
    }
    before = now;
    if (Date.now() > until) throw new Error('positions never held still');
  }
  const a2 = await client(all, 12_000);
  for (const k of keys) await a2.put(k, 'v2');
  await a2.close();
}

async function stopRing(): Promise<void> {
  for (const n of extra) await n.stop().catch(() => undefined);
  extra.length = 0;
  await ring?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}

/** Reads of every key through each node for up to `ms` (stops at the first v1); the recovery modes seen. */
async function watchReads(nodes: LocalNode[], ms: number, enough?: (modes: Set<string>) => boolean): Promise<{ seen: Set<string>; modes: Set<string> }> {
  const seen = new Set<string>();
  const modes = new Set<string>();
  const start = Date.now();
  for (const until = start + ms; Date.now() < until;) {
    for (const n of nodes) {
      const s = await statusOf(n.addr);
      const rec = s?.recovery as { mode?: string } | undefined;
      if (rec?.mode) modes.add(`${n.name}:${rec.mode}`);
      const kv = await client([n.addr], 3000).catch(() => null);
      if (!kv) continue;
      for (const k of keys) seen.add(await outcome(kv.get(k)));
      await kv.close();
    }
    if (seen.has('v1')) break;
    // Reads kept going a while after the outcome is settled (CI time: the suite's wall time is bounded).
    if (enough?.(modes) && Date.now() - start > 8000) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  return { seen, modes };
}

const extra: LocalNode[] = [];


describe('F1: a staggered restart of every node from old copies', () => {
  beforeAll(() => ringWithOldCopies('ekv-r15a-'), 180_000);
  afterAll(stopRing);
  it('never serves the old values without a recovery member signing', async () => {
    const [n1, n2, n3] = ring.nodes as [LocalNode, LocalNode, LocalNode];
    // node-1 from its old copy, while node-2 and node-3 live: it finds a live member and starts its core.
    await killAndRestore(n1, 1);
    await n1.launch();
    for (const until = Date.now() + 20_000; ;) {
      const s = await statusOf(n1.addr);
      if (s && typeof s.checking === 'boolean') break; // its data core runs (checking its state)
      if (Date.now() > until) throw new Error('node-1 never started its core');
      await new Promise((r) => setTimeout(r, 50));
    }
    // At once (the host would simply drop node-1's state checks to them): node-2 and node-3 from old copies.
    await Promise.all([killAndRestore(n2, 2), killAndRestore(n3, 3)]);
    await Promise.all([n2.launch(), n3.launch()]);
    const { seen, modes } = await watchReads([n1, n2, n3], 30_000, (m) => m.has('node-2:recovery') && m.has('node-3:recovery'));
    logger.info({ seen: [...seen], modes: [...modes] }, 'review-15 F1');
    expect([...seen], `modes seen: ${[...modes].join(' ')}`).not.toContain('v1');
    // Not vacuous: the old copies restarted after node-1 found no live member and wait for their recovery members.
    expect([...modes].filter((x) => x.endsWith(':recovery')).length, [...modes].join(' ')).toBeGreaterThan(0);
  }, 150_000);
});

// F1b (attempted; HELD, then FIXED in branch rec): the same rollback through a node that is no member of anything the old copies hold. The host
// starts a fresh node N beside the live ring (its host hands it the ring's ring-secret ciphertext, which is not secret),
// so N is a proven, serving node of the ring; then it kills every member and relaunches each from its old copy with N
// as the join address. Held: N answers the old copies' witness questions with the members' later positions (heard
// while they ran), so they are found behind. (Relaunching N first, to wipe those witnesses, puts N itself in recovery
// mode: it finds no live member either.) What is not shown: a host that also drops the old copies' witness questions
// to N (N is in none of their sealed configurations, so their check does not wait for it): see REPORT-review15.md.
// Fixed (docs/recovery.md, "Whom a member may count"): only a co-member of a sealed configuration vouches, so every
// old copy now comes up in recovery mode (asserted below; before the fix every one found N alive and opened).
// Not in `npm test` (about 80 s of the suite's 20-minute budget for an attack that held): EKV_LONG=1 runs it.
describe.skipIf(!process.env.EKV_LONG)('F1b (fixed): a fresh node as the live member vouching for old copies of every member', () => {
  beforeAll(() => ringWithOldCopies('ekv-r15b-'), 180_000);
  afterAll(stopRing);
  it('never serves the old values without a recovery member signing', async () => {
    const [n1, n2, n3] = ring.nodes as [LocalNode, LocalNode, LocalNode];
    const kms = JSON.parse(readFileSync(join(dir, 'kms.json'), 'utf8')) as LocalKmsInfo;
    const freshDir = join(dir, 'fresh');
    provideRingSecret(dir, join(freshDir, 'data'));
    const fresh = new LocalNode({
      name: 'fresh', dir: freshDir, imagePath: ring.imagePath, ca: ring.ca, listenPort: 0, httpPort: 0, logger,
      enclaveEnv: () => ({ EKV_JOIN: n1.addr, ...kmsEnv(kms) }), startBlobStore: localBlobStore(logger), imdsUrl: kms.imdsUrl,
    });
    extra.push(fresh);
    await fresh.start();
    for (const until = Date.now() + 30_000; ;) {
      const s = await statusOf(fresh.addr);
      if (s && s.checking === false && (s.recovery as { mode?: string } | undefined)?.mode === 'open') break;
      if (Date.now() > until) throw new Error('the fresh node never ran');
      await new Promise((r) => setTimeout(r, 100));
    }
    // Every member down (the fresh node keeps running).
    for (const [n, i] of [[n1, 1], [n2, 2], [n3, 3]] as const) await killAndRestore(n, i);
    // Every member from its old copy, told to join through the fresh node.
    for (const n of [n1, n2, n3]) {
      const o = (n as unknown as { opts: { enclaveEnv: (x: { addr: string; relaunch: boolean }) => Record<string, string> } }).opts;
      const was = o.enclaveEnv;
      o.enclaveEnv = (x) => ({ ...was(x), EKV_JOIN: fresh.addr });
    }
    await Promise.all([n1.launch(), n2.launch(), n3.launch()]);
    const { seen, modes } = await watchReads([n1, n2, n3, fresh], 25_000);
    logger.info({ seen: [...seen], modes: [...modes] }, 'review-15 F1b');
    expect([...seen], `modes seen: ${[...modes].join(' ')}`).not.toContain('v1');
    // N vouches for none of them: each old copy waits in recovery mode, none opens.
    for (const n of [n1, n2, n3]) {
      expect(modes.has(`${n.name}:recovery`) && !modes.has(`${n.name}:open`), `${n.name}: modes seen: ${[...modes].join(' ')}`).toBe(true);
    }
  }, 200_000);
});

// F2 (medium): the host chooses the enclave's log level (EKV_LOG_LEVEL, or `logLevel` in node-config.json), and the
// enclave's logs go to the host. At `debug`, the data core logs every key of a range (with its version) each time the
// range becomes active at the node: the host reads the key names of the data it stores, which nothing else shows it
// (status and rcvStatus give counts only; keys are for operators). Expected: no key name in any log line.
describe('F2: the host-chosen log level and the keys of the data', () => {
  it('no log line, at any level, names a key', async () => {
    const { DataNet, fast } = await import('./helpers/data-net.ts');
    const { captureLogs } = await import('./helpers/log-capture.ts');
    const { logs, logger } = captureLogs('debug');
    const net = new DataNet();
    net.logger = logger;
    try {
      await net.start(4, { ...fast, leaseTicks: 100 });
      await net.until('formed', 15_000, () => net.nodes.every((x) => x.store.ready));
      const key = 'confidential-customer-list';
      const first = net.nodes[1] as (typeof net.nodes)[number];
      const s = (await net.call(first, 'open', { k: Buffer.from(key) })).s as number;
      expect(await net.call(first, 'put', { k: Buffer.from(key), v: Buffer.from('v1'), s: [s, 1, 1] })).toEqual({ n: 1 });
      // The owner is cut off: another node takes the range over (and activates it, holding the key).
      const old = net.ownerOf(key);
      const other = net.nodes.find((x) => x !== old) as typeof first;
      net.cut.add(old.ref.addr);
      let acked = false;
      for (let i = 0; i < 100 && !acked; i++) {
        acked = await net.call(other, 'put', { k: Buffer.from(key), v: Buffer.from('v2'), s: [s, 2, 2] }).then(() => true, () => false);
      }
      expect(acked).toBe(true);
      const leaking = logs.map((l) => JSON.stringify(l)).filter((l) => l.includes(key));
      expect(leaking.map((l) => l.slice(0, 300))).toEqual([]);
    } finally {
      net.stop();
    }
  }, 40_000);
});

// F3 (low): namespace and group names in the enclave's logs at the default level. When an ACL or group document
// changes and one of its lease holders does not confirm (the host only has to delay that node's answer), the owner
// logs `holder unreachable` at info with `doc: acl/<namespace>` (or `group/<name>`); a lease answer overtaken by a
// push logs the same id at debug. Namespace names are shown only to principals with a right in them (`ekv ns list`),
// and the logs go to the host. A source check (the path needs a signed document and a lost push): no log call of the
// access layer names a document's id or name.
describe('F3: the access layer logs no namespace or group name', () => {
  it('no logger call passes a document id or name', async () => {
    const { readdirSync, readFileSync: read } = await import('node:fs');
    const dirPath = join(import.meta.dirname, '..', 'enclave', 'access');
    const offending: string[] = [];
    for (const f of readdirSync(dirPath).filter((x) => x.endsWith('.ts'))) {
      for (const [i, line] of read(join(dirPath, f), 'utf8').split('\n').entries()) {
        if (/logger\.(trace|debug|info|warn|error|fatal)\(/.test(line) && /ref\.(id|name)\b/.test(line)) offending.push(`${f}:${i + 1}`);
      }
    }
    expect(offending).toEqual([]);
  });
});
