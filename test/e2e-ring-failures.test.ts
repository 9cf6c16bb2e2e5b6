// Crashes while a writer runs: on a 5-node ring (R=3), kill -9 one enclave,
// then two adjacent ones at once (with R=3 the hardest case: for the keys the
// first of them owns, only one copy survives). LocalNode relaunches each dead
// enclave 500 ms later (Restart=always) from its sealed log, so it comes back
// as the same member of its ranges' configurations.
// Every operation is recorded, and the history must show no lost acknowledged
// write and no stale read; then R copies of every key must be back.
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { History } from './helpers/history.ts';
import { finishHistory, RingFixture, ringOrder, sleep, Workload, type NodeView } from './helpers/ring-fixture.ts';

const replicas = 3;
const baseKeys = Array.from({ length: 300 }, (_, i) => `base-${i}`);
const hotKeys = Array.from({ length: 24 }, (_, i) => `hot-${i}`);

describe('the history checker', () => {
  const put = (h: History, key: string, value: string, version: number) => h.ok(h.invoke(key, 'put', value), { version });
  const get = (h: History, key: string, value: string | null, version: number) => h.ok(h.invoke(key, 'get'), { value, version });

  it('accepts a linearizable history, including reads of a write whose outcome is unknown', () => {
    const h = new History();
    get(h, 'k', null, 0);
    put(h, 'k', 'k#1', 1);
    get(h, 'k', 'k#1', 1);
    const inflight = h.invoke('k', 'put', 'k#2');
    get(h, 'k', 'k#1', 1); // k#2 may not have taken effect yet
    h.fail(inflight, { code: 'TIMEOUT' });
    get(h, 'k', 'k#2', 2); // ... or it did
    put(h, 'k', 'k#3', 3);
    get(h, 'k', 'k#3', 3);
    expect(h.check()).toEqual([]);
    expect(h.lastAcked().get('k')).toEqual({ value: 'k#3', version: 3 });
  });

  it('reports a lost write, a stale read, a regressing read, a phantom and a version conflict', () => {
    const h = new History();
    put(h, 'lost', 'lost#1', 1);
    get(h, 'lost', null, 0); // the acknowledged write is gone
    put(h, 'stale', 'stale#1', 1);
    put(h, 'stale', 'stale#2', 2);
    get(h, 'stale', 'stale#1', 1);
    const slow = h.invoke('regress', 'put', 'regress#1');
    get(h, 'regress', 'regress#1', 1);
    h.fail(slow, { code: 'TIMEOUT' });
    const r = h.invoke('regress', 'get');
    h.ok(r, { value: null, version: 0 }); // went back to before a value already seen
    get(h, 'phantom', 'nobody wrote this', 7);
    put(h, 'conflict', 'conflict#1', 1);
    h.fail(h.invoke('conflict', 'put', 'conflict#2'), { code: 'CLOSED' });
    get(h, 'conflict', 'conflict#2', 1);
    const kinds = h.check().map((v) => `${v.key}:${v.kind}`).sort();
    expect(kinds).toEqual(['conflict:version-conflict', 'lost:stale', 'lost:version-regress', 'phantom:phantom', 'regress:regress', 'stale:stale', 'stale:version-regress']);
  });
});

describe('kill -9 of enclaves while a writer runs (5 nodes, R=3)', () => {
  let fx: RingFixture;
  const history = new History();
  let work: Workload;
  let views: NodeView[] = [];
  /** History clock values at each fault, for reading a failure report. */
  const marks: Record<string, number> = {};
  const mark = (what: string) => (marks[what] = history.now());

  beforeAll(async () => {
    // Sealed: kill -9 keeps a node's sealed log, so a relaunched enclave is the same member (same identity,
    // same promises) and its ranges need it back or a reconfiguration without it. (Two adjacent nodes that
    // both lose their state at once take a majority of some range's configuration with them: that range is
    // unavailable by design, docs/consistency.md "What is not guaranteed"; a node that loses its state alone
    // is replaced: test/data-store.test.ts and the simulator.)
    fx = await RingFixture.start({ nodes: 5, replicas, seal: true });
    await fx.waitSettled(30_000);
    // The base keys, written once through rotating nodes, recorded like everything else.
    const addrs = fx.addrs();
    await Promise.all(baseKeys.map(async (k, i) => {
      const r = history.invoke(k, 'put', `${k}#1`, addrs[i % addrs.length]);
      try {
        history.ok(r, { version: await (await fx.client(addrs[i % addrs.length] as string)).put(k, `${k}#1`) });
      } catch (err) {
        history.fail(r, err);
      }
    }));
    work = new Workload(fx, history, { keys: hotKeys, readers: 6 });
    work.start();
  }, 60_000);

  afterAll(async () => {
    await work?.stop();
    await fx?.stop();
  });

  it('rides out one crash', async () => {
    await sleep(1500);
    const victim = fx.members[2]!;
    mark(`kill ${victim.addr}`);
    const pid = fx.kill9(victim);
    await fx.waitRelaunched(victim, pid, 20_000);
    views = await fx.waitSettled(30_000);
    await sleep(1000);
    expect(history.counts().putsOk).toBeGreaterThan(baseKeys.length);
  }, 60_000);

  it('rides out two adjacent enclaves crashing at once', async () => {
    const order = ringOrder(views);
    const [a, b] = [order[1] as NodeView, order[2] as NodeView];
    expect(a.successors[0]).toBe(b.addr);
    const na = fx.byAddr(a.addr), nb = fx.byAddr(b.addr);
    const before = history.counts().putsOk;
    mark(`kill ${a.addr} ${b.addr}`);
    const pids = [fx.kill9(na), fx.kill9(nb)];
    await Promise.all([fx.waitRelaunched(na, pids[0] as number, 20_000), fx.waitRelaunched(nb, pids[1] as number, 20_000)]);
    // Two relaunches plus stabilization around both: 30 s was too short on a loaded 2-core CI machine.
    views = await fx.waitSettled(60_000);
    await sleep(1000);
    expect(history.counts().putsOk).toBeGreaterThan(before);
  }, 100_000);

  // Earlier versions of enclave/cluster failed here: a node without a known predecessor served the whole
  // ring with its own versions, a dead node's old id lingered in successor lists, and stray-copy collection
  // once dropped a last copy. Set EKV_HISTORY_DUMP=/tmp/h.json to keep the history and its violations.
  it('lost no acknowledged write and served no stale read', async () => {
    const { counts, violations, summary } = await finishHistory(fx, history, work, [hotKeys, baseKeys]);
    if (process.env.EKV_HISTORY_DUMP) writeFileSync(process.env.EKV_HISTORY_DUMP, JSON.stringify({ counts, violations, marks, ops: history.ops }));
    expect(violations.slice(0, 12), summary).toEqual([]);
    // Every acknowledged write's key is there with its last acknowledged value (or a later in-flight one).
    expect(counts.putsOk).toBeGreaterThan(baseKeys.length + 100);
    expect(counts.getsOk).toBeGreaterThan((hotKeys.length + baseKeys.length) * fx.addrs().length);
  }, 60_000);

  it('brings back R copies of every key', async () => {
    const keys = [...baseKeys, ...hotKeys].map((k) => Buffer.from(k));
    // Ranges move back to the relaunched nodes by reconfiguration (each waits out the lease it replaces).
    const { views: v, report } = await fx.waitCopies(keys, 45_000, false);
    const failedPuts = history.ops.filter((r) => r.op === 'put' && r.outcome !== 'ok').map((r) => `${r.key}: ${r.error}`);
    expect(report.atLeast, `${report.lines.join('\n')}\nfailed puts: ${failedPuts.length} ${failedPuts.slice(0, 5).join(', ')}`).toBe(true);
    expect(v.reduce((s, x) => s + x.keys, 0)).toBeGreaterThanOrEqual(replicas * keys.length);
  }, 60_000);

  // Stray copies (left one node further on while an enclave was down) are collected (491b131).
  it('drops the stray copies once R copies are back (sum of keys = R x keys)', async () => {
    const keys = [...baseKeys, ...hotKeys].map((k) => Buffer.from(k));
    const { views: v, report } = await fx.waitCopies(keys, 20_000, true);
    expect(report.exact, report.lines.join('\n')).toBe(true);
    expect(v.reduce((s, x) => s + x.keys, 0)).toBe(replicas * keys.length);
  }, 30_000);
});
