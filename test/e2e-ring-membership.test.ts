// Membership changes while a writer runs, on a 5-node ring (R=3): a node
// started with `ekv node --join` (another process) enters the ring and takes
// its range before serving it; an original node is removed gracefully
// (SIGTERM to its enclave: it hands its keys to its successor and leaves).
// The recorded history must show no lost acknowledged write and no stale read.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { History } from './helpers/history.ts';
import { finishHistory, RingFixture, sleep, waitFor, Workload } from './helpers/ring-fixture.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));
const replicas = 3;
const baseKeys = Array.from({ length: 300 }, (_, i) => `member-${i}`);
const hotKeys = Array.from({ length: 16 }, (_, i) => `churn-${i}`);

/** `ekv node --join`: resolves with the child and its ready line once the node is up. */
async function startCliNode(fx: RingFixture): Promise<{ child: ChildProcess; addr: string; enclavePid: number }> {
  const child = spawn(process.execPath, [
    ekvBin, 'node', '--join', fx.addrs()[0] as string, '--cluster', fx.ring.clusterFile,
    '--dir', join(fx.dir, 'cli'), '--replicas', String(replicas), '--log-level', 'silent', '--json',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.resume();
  const ready = await waitFor('ekv node to print its ready line', 30_000, async () => {
    if (child.exitCode !== null) throw new Error(`ekv node exited with ${child.exitCode}`);
    const line = out.split('\n').find((l) => l.startsWith('{'));
    return line ? (JSON.parse(line) as { addr: string; pids: { enclave: number } }) : 'not ready';
  });
  return { child, addr: ready.addr, enclavePid: ready.pids.enclave };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

describe('a node joins and a node leaves while a writer runs (5 nodes, R=3)', () => {
  let fx: RingFixture;
  let cli: ChildProcess | null = null;
  const history = new History();
  let work: Workload;

  beforeAll(async () => {
    fx = await RingFixture.start({ nodes: 5, replicas });
    await fx.waitSettled(30_000);
    const addrs = fx.addrs();
    await Promise.all(baseKeys.map(async (k, i) => {
      const via = addrs[i % addrs.length] as string;
      const r = history.invoke(k, 'put', `${k}#1`, via);
      try {
        history.ok(r, { version: await (await fx.client(via)).put(k, `${k}#1`) });
      } catch (err) {
        history.fail(r, err);
      }
    }));
    work = new Workload(fx, history, { keys: hotKeys, readers: 4 });
    work.start();
  }, 60_000);

  afterAll(async () => {
    await work?.stop();
    if (cli) await stopChild(cli);
    await fx?.stop();
  });

  it('takes in a node started with `ekv node --join`', async () => {
    await sleep(1000);
    const node = await startCliNode(fx);
    cli = node.child;
    expect(node.enclavePid).toBeGreaterThan(0);
    fx.external.push(node.addr);
    const views = await fx.waitSettled(30_000);
    expect(views).toHaveLength(6);
    const joined = views.find((v) => v.addr === node.addr);
    expect(joined?.serving).toBe(true);
    // It took over its range: it holds keys now (its share of the base keys at least).
    const copies = await fx.waitCopies(baseKeys.map((k) => Buffer.from(k)), 20_000, false);
    expect(copies.report.atLeast, copies.report.lines.join('\n')).toBe(true);
    expect(copies.views.find((v) => v.addr === node.addr)?.keys).toBeGreaterThan(0);
  }, 80_000);

  it('lets a node leave gracefully (SIGTERM to its enclave)', async () => {
    await sleep(1000);
    const leaving = fx.members[1]!;
    await fx.removeNode(leaving);
    await fx.waitSettled(60_000);
    // The immediate pointers settle first; the rest of each successor list follows within a few stabilization
    // rounds (each node copies its successor's list), so wait for the leaving node to be gone from all of them.
    const views = await waitFor('the leaving node to drop out of every successor list', 30_000, async () => {
      const vs = await fx.statusAll();
      return vs.some((v) => v.successors.includes(leaving.addr) || v.predecessor === leaving.addr) ? 'still listed' : vs;
    });
    expect(views).toHaveLength(5);
    for (const v of views) {
      expect(v.successors).not.toContain(leaving.addr);
      expect(v.predecessor).not.toBe(leaving.addr);
    }
    await sleep(1000);
  }, 120_000);

  it('lost no acknowledged write and served no stale read', async () => {
    const { counts, violations, summary } = await finishHistory(fx, history, work, [hotKeys, baseKeys]);
    expect(violations.slice(0, 12), summary).toEqual([]);
    expect(counts.putsOk).toBeGreaterThan(baseKeys.length + 100);
    const copies = await fx.waitCopies([...baseKeys, ...hotKeys].map((k) => Buffer.from(k)), 20_000, false);
    expect(copies.report.atLeast, copies.report.lines.join('\n')).toBe(true);
  }, 90_000);
});
