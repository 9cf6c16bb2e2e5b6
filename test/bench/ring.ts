// Ring speed (issue 4): on a 1-, 3- and 5-node ring of emulated enclaves (R = min(3, nodes)),
// through the SDK with N concurrent clients (each its own EkvClient):
// - put and get ops/s with p50/p99 latency, for the client's 'cached' routing (straight to the owner
//   by the ring view it verified) and 'any' (a node by hashing the key over the node list; the
//   ring forwards to the owner);
// - the mean hops per ring lookup (the nodes' `hops`/`lookups` counters over the phase) and the
//   share of requests the entry node forwarded;
// - the time to restore R copies of 10,000 keys after kill -9 of one enclave (LocalNode relaunches
//   it 500 ms later, as systemd would): until the ring is settled again and every node holds at
//   least the keys the placement gives it.
//
//   npx tsx test/bench/ring.ts [--nodes 1,3,5] [--clients 32] [--connections N (SDK clients, default --clients)] [--seconds 5] [--value-bytes 100]
//                              [--keys 2000] [--restore-keys 10000] [--seal] [--json]
//                              [--routings cached,any] [--no-restore]   (fewer phases, for a quick before/after)
//                              [--ops put,get]   (which phases)
//                              [--cold-sessions]   (put phases: no session warm-up; by default every client opens its
//                                   write session of each range before the clock, so the phase counts steady-state puts)
//                              [--cpu-prof [--prof-dir DIR] [--prof-top N]]   V8 profiles of every enclave and of this
//                                   process (the host proxies run in it, with the load generator), cut to the measured
//                                   phases and summarized per request (the top N functions and sources by self time)
// Per phase it also prints the peer data batches (`dm` RPCs) sent per operation and the data messages per
// batch (nodes' `status`), the CPU per operation of the whole ring (this process and its enclaves, /proc) and of
// this process alone, and the data cores' replication retries (rounds sent again after retryTicks: a lost or
// late message) and data messages dropped, summed over the nodes from their attested `metrics`.
// Progress goes to stderr, the table (or one JSON object) to stdout.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseMetricsSnapshot } from '../../protocol/metrics.ts';
import { loadAverage, selfCpuSeconds, treeCpuSeconds } from './lib/cpu.ts';
import { formatSummary, readProfile, summarizeProfile, windowProfile, type ProfileSummary } from './lib/cpuprofile.ts';
import { connect, type EkvClient, type Routing } from '../../client/index.ts';
import { enclaveDataConfig } from '../../enclave/cluster/data-store.ts';
import { shardOf } from '../../enclave/data/index.ts';
import { RingFixture, type NodeView } from '../helpers/ring-fixture.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

interface PhaseResult {
  nodes: number;
  op: 'put' | 'get';
  routing: Routing;
  ops: number;
  errors: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** Ring lookups the nodes ran during the phase, their mean hops, and forwarded requests per op. */
  lookups: number;
  meanHops: number | null;
  forwardsPerOp: number;
  /** Replication rounds sent again, and data messages dropped or undeliverable, over every node during the phase. */
  resends: number;
  dropped: number;
  /** Peer data batches (`dm` RPCs) sent per operation, over every node, and the data messages per batch. */
  batchesPerOp: number;
  messagesPerBatch: number | null;
  /**
   * CPU per operation over the phase: every process of the ring (this process, where the host proxies, blob
   * stores and load generator run, and the enclaves, its descendants), and this process alone; with the
   * 1-minute load average at the end (a shared machine shows up there). Null where /proc is missing.
   */
  cpuUsPerOp: number | null;
  benchCpuUsPerOp: number | null;
  load: number;
}

interface RestoreResult {
  nodes: number;
  keys: number;
  /** Seconds from kill -9 until R copies are back (null: not within the deadline). */
  seconds: number | null;
  secondsPer10kKeys: number | null;
  /** Seconds until the relaunched enclave answered again. */
  relaunchSeconds: number;
}

const { values: argv } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1,3,5' },
    clients: { type: 'string', default: '32' },
    connections: { type: 'string' },
    seconds: { type: 'string', default: '5' },
    'value-bytes': { type: 'string', default: '100' },
    keys: { type: 'string', default: '2000' },
    'restore-keys': { type: 'string', default: '10000' },
    'restore-deadline': { type: 'string', default: '120' },
    seal: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    routings: { type: 'string', default: 'cached,any' },
    'no-restore': { type: 'boolean', default: false },
    ops: { type: 'string', default: 'put,get' },
    'cpu-prof': { type: 'boolean', default: false },
    'prof-dir': { type: 'string' },
    'prof-top': { type: 'string', default: '8' },
    'cold-sessions': { type: 'boolean', default: false },
  },
});
const sizes = (argv.nodes as string).split(',').map(Number);
const clients = Number(argv.clients);
// SDK clients (each its own connections and write sessions) the loops share, round robin; default one per loop.
// Anonymous callers are one principal, which holds at most 32 sessions per range: past 32 SDK clients, writes
// would evict each other's sessions.
const connections = Math.min(clients, Number(argv.connections ?? clients));
const phaseMs = Number(argv.seconds) * 1000;
const valueBytes = Number(argv['value-bytes']);
const keyCount = Number(argv.keys);
const restoreKeys = Number(argv['restore-keys']);
const restoreDeadlineMs = Number(argv['restore-deadline']) * 1000;
const phaseOps = (argv.ops as string).split(',').filter((x) => x !== '') as Array<'put' | 'get'>;
if (phaseOps.length === 0 || phaseOps.some((x) => x !== 'put' && x !== 'get')) throw new Error('--ops takes put,get');
const profDir = (argv['prof-dir'] as string | undefined) ?? (argv['cpu-prof'] ? join(tmpdir(), `ekv-ring-prof-${Date.now()}`) : null);
const profTop = Number(argv['prof-top']);
const progress = (line: string) => process.stderr.write(`bench:ring: ${line}\n`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function totals(views: NodeView[], field: 'lookups' | 'hops'): number {
  return views.reduce((s, v) => s + v[field], 0);
}

/** Summed over the nodes' `status`: forwarded client operations, data messages sent, and the batches they went in. */
async function counts(fx: RingFixture): Promise<{ forwards: number; messages: number; batches: number }> {
  const n = { forwards: 0, messages: 0, batches: 0 };
  const num = (x: unknown) => (typeof x === 'number' ? x : 0);
  for (const addr of fx.addrs()) {
    const s = await (await fx.client(addr)).node(addr).call('status', {});
    n.forwards += num(s.forwards);
    n.messages += num(s.peerMessagesOut);
    n.batches += num(s.peerBatchesOut);
  }
  return n;
}

/** One put per range for each client (keys of that range, spread over clients), a few at a time per client. */
async function openSessions(kvs: EkvClient[], keys: Buffer[]): Promise<void> {
  const byShard = new Map<number, Buffer[]>();
  for (const k of keys) {
    const s = shardOf(k.toString('latin1'), enclaveDataConfig.shards);
    byShard.set(s, [...(byShard.get(s) ?? []), k]);
  }
  const value = Buffer.alloc(valueBytes, 0x63);
  await Promise.all(kvs.map(async (kv, c) => {
    const todo = [...byShard.values()].map((ks) => ks[c % ks.length] as Buffer);
    await Promise.all(Array.from({ length: 4 }, async () => {
      for (let k = todo.pop(); k !== undefined; k = todo.pop()) await kv.put(k, value);
    }));
  }));
}

/** Replication retries and dropped data messages, summed over the nodes (their `metrics` snapshots). */
async function replication(fx: RingFixture): Promise<{ resends: number; dropped: number }> {
  const sum = { resends: 0, dropped: 0 };
  for (const addr of fx.addrs()) {
    const r = await (await fx.client(addr)).node(addr).call('metrics', {});
    const snap = parseMetricsSnapshot(r.m);
    const total = (name: string) => (snap.f.find((f) => f.n === name)?.s ?? []).reduce((s, x) => s + (x[2] as number), 0);
    sum.resends += total('ekv_enclave_replication_retries_total');
    sum.dropped += total('ekv_enclave_replication_failures_total');
  }
  return sum;
}

/** `clients` loops doing `op` on random keys for `phaseMs`; latencies in ms. */
async function runPhase(fx: RingFixture, op: 'put' | 'get', routing: Routing, keys: Buffer[]): Promise<PhaseResult> {
  const kvs: EkvClient[] = await Promise.all(Array.from({ length: connections }, () => connect({ cluster: fx.ring.cluster, trustClusterFile: true, routing, timeoutMs: 10_000 })));
  const value = Buffer.alloc(valueBytes, 0x61);
  // Warm up: every client verifies every node it will use before the clock starts.
  await Promise.all(kvs.map((kv) => kv.verifyAll()));
  await Promise.all(kvs.map((kv, i) => kv.get(keys[i % keys.length] as Buffer)));
  // A put phase: every client opens its write session of every range before the clock (one put per range), so
  // that the phase measures steady-state puts, not each (client, range) pair's one-time session open (a
  // replicated write of its own): 32 clients x 64 ranges is 2,048 opens, more than a 3-node ring's whole phase.
  if (op === 'put' && !argv['cold-sessions']) await openSessions(kvs, keys);
  const before = { views: await fx.statusAll(), counts: await counts(fx), repl: await replication(fx) };
  const lat: number[] = [];
  let errors = 0;
  const cpu0 = { tree: treeCpuSeconds(process.pid), self: selfCpuSeconds() };
  const t0 = performance.now();
  const end = t0 + phaseMs;
  const from = monotonicUs();
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const kv = kvs[c % kvs.length] as EkvClient;
    for (let i = c; performance.now() < end; i += clients) {
      const k = keys[(i * 7919) % keys.length] as Buffer;
      const s = performance.now();
      try {
        if (op === 'put') await kv.put(k, value);
        else await kv.get(k);
        lat.push(performance.now() - s);
      } catch {
        errors++;
      }
    }
  }));
  const elapsed = (performance.now() - t0) / 1000;
  windows.push([from, monotonicUs()]);
  const cpu1 = { tree: treeCpuSeconds(process.pid), self: selfCpuSeconds() };
  const load = loadAverage();
  const after = { views: await fx.statusAll(), counts: await counts(fx), repl: await replication(fx) };
  opsMeasured += lat.length + errors;
  await Promise.all(kvs.map((kv) => kv.close()));
  lat.sort((a, b) => a - b);
  const lookups = totals(after.views, 'lookups') - totals(before.views, 'lookups');
  const hops = totals(after.views, 'hops') - totals(before.views, 'hops');
  return {
    nodes: fx.members.length, op, routing, ops: lat.length, errors,
    opsPerSec: Math.round(lat.length / elapsed),
    p50Ms: round(percentile(lat, 50)), p99Ms: round(percentile(lat, 99)),
    lookups, meanHops: lookups > 0 ? round(hops / lookups) : null,
    forwardsPerOp: lat.length > 0 ? round((after.counts.forwards - before.counts.forwards) / lat.length) : 0,
    batchesPerOp: lat.length > 0 ? round((after.counts.batches - before.counts.batches) / lat.length) : 0,
    messagesPerBatch: after.counts.batches > before.counts.batches
      ? round((after.counts.messages - before.counts.messages) / (after.counts.batches - before.counts.batches)) : null,
    resends: after.repl.resends - before.repl.resends, dropped: after.repl.dropped - before.repl.dropped,
    cpuUsPerOp: cpu0.tree === null || cpu1.tree === null || lat.length === 0 ? null : Math.round(((cpu1.tree - cpu0.tree) * 1e6) / lat.length),
    benchCpuUsPerOp: lat.length === 0 ? null : Math.round(((cpu1.self - cpu0.self) * 1e6) / lat.length),
    load: round(load),
  };
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

async function writeAll(fx: RingFixture, keys: Buffer[]): Promise<void> {
  const kv = await connect({ cluster: fx.ring.cluster, trustClusterFile: true, timeoutMs: 20_000 });
  const value = Buffer.alloc(valueBytes, 0x62);
  let next = 0;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (next < keys.length) await kv.put(keys[next++] as Buffer, value);
  }));
  await kv.close();
}

async function measureRestore(fx: RingFixture): Promise<RestoreResult> {
  const keys = Array.from({ length: restoreKeys }, (_, i) => Buffer.from(`restore-${i}`));
  progress(`${fx.members.length} nodes: writing ${restoreKeys} keys`);
  await writeAll(fx, keys);
  const settled = await fx.waitCopies(keys, 60_000, false);
  if (!settled.report.atLeast) throw new Error(`R copies never placed before the kill:\n${settled.report.lines.join('\n')}`);
  const victim = fx.members[Math.floor(fx.members.length / 2)]!;
  progress(`${fx.members.length} nodes: kill -9 the enclave of ${victim.addr}`);
  const t0 = performance.now();
  const pid = fx.kill9(victim);
  await fx.waitRelaunched(victim, pid, 60_000);
  const relaunchSeconds = round((performance.now() - t0) / 1000);
  const { report } = await fx.waitCopies(keys, restoreDeadlineMs, false);
  const seconds = report.atLeast ? round((performance.now() - t0) / 1000) : null;
  if (!report.atLeast) progress(`R copies not back within ${restoreDeadlineMs / 1000} s:\n  ${report.lines.join('\n  ')}`);
  return { nodes: fx.members.length, keys: restoreKeys, seconds, secondsPer10kKeys: seconds === null ? null : round((seconds * 10_000) / restoreKeys), relaunchSeconds };
}

/**
 * The measured phases' windows on V8's profile clock, and the operations they issued: the profiles are cut to
 * these windows and their costs divided by these operations (the enclaves' --cpu-prof covers their whole life).
 */
let windows: Array<[number, number]> = [];
let opsMeasured = 0;
const profiles: ProfileSummary[] = [];
const monotonicUs = (): number => Number(process.hrtime.bigint() / 1000n);

function profilesIn(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => n.endsWith('.cpuprofile')).sort().map((n) => join(dir, n));
  } catch {
    return [];
  }
}

async function benchRing(nodes: number): Promise<{ phases: PhaseResult[]; restore: RestoreResult | null }> {
  const replicas = Math.min(3, nodes);
  progress(`starting a ${nodes}-node ring (R=${replicas}${argv.seal ? ', sealed' : ''})`);
  // Profiles: the enclaves by the launcher's profiling-only flags (read when each enclave is launched), this
  // process (host proxies, blob stores, load generator) by the inspector, from the first phase to the last.
  const dir = profDir === null ? null : join(profDir, `${nodes}-nodes`);
  if (dir !== null) {
    mkdirSync(join(dir, 'enclave'), { recursive: true });
    process.env.EKV_ENCLAVE_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${join(dir, 'enclave')}`;
  }
  const fx = await RingFixture.start({ nodes, replicas, seal: argv.seal as boolean });
  if (dir !== null) delete process.env.EKV_ENCLAVE_NODE_ARGS;
  let session: Session | null = null;
  opsMeasured = 0;
  windows = [];
  try {
    await fx.waitSettled(60_000);
    const keys = Array.from({ length: keyCount }, (_, i) => Buffer.from(`bench-${i}`));
    await writeAll(fx, keys);
    const phases: PhaseResult[] = [];
    if (dir !== null) {
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    for (const routing of (argv.routings as string).split(',') as Routing[]) {
      for (const op of phaseOps) {
        progress(`${nodes} nodes: ${op} via '${routing}' routing, ${clients} clients, ${phaseMs / 1000} s`);
        phases.push(await runPhase(fx, op, routing, keys));
      }
    }
    if (session !== null && dir !== null) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(join(dir, 'bench-process.cpuprofile'), JSON.stringify(profile));
      session.disconnect();
      session = null;
    }
    // One node cannot restore anything, and with R=3 a 3-node ring needs the relaunched node back.
    const restore = nodes > 1 && !argv['no-restore'] ? await measureRestore(fx) : null;
    return { phases, restore };
  } finally {
    session?.disconnect();
    await fx.stop();
    if (dir !== null) {
      // Each enclave writes its profile when it exits (the whole run: start, preload and phases).
      const label = `${nodes}-node ring (${(argv.ops as string)} phases, ${opsMeasured} requests)`;
      const cut = (f: string) => windowProfile(readProfile(f), windows);
      profilesIn(join(dir, 'enclave')).forEach((f, i) => profiles.push(summarizeProfile(cut(f), `${label} enclave ${i + 1}`, opsMeasured, profTop)));
      const own = profilesIn(dir);
      if (own[0]) profiles.push(summarizeProfile(cut(own[0]), `${label} bench process (host proxies, blob stores, SDK)`, opsMeasured, profTop));
      progress(`profiles in ${dir}`);
    }
  }
}

function table(phases: PhaseResult[], restores: RestoreResult[]): string {
  const head = ['nodes', 'op', 'routing', 'ops/s', 'p50 ms', 'p99 ms', 'errors', 'lookups', 'mean hops', 'fwd/op', 'dm/op', 'msgs/dm', 'resends', 'dropped', 'cpu us/op', 'bench us/op', 'load'];
  const rows = phases.map((p) => [p.nodes, p.op, p.routing, p.opsPerSec, p.p50Ms, p.p99Ms, p.errors, p.lookups, p.meanHops ?? '-', p.forwardsPerOp, p.batchesPerOp, p.messagesPerBatch ?? '-', p.resends, p.dropped, p.cpuUsPerOp ?? '-', p.benchCpuUsPerOp ?? '-', p.load].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]) => r.map((c, i) => c.padStart(widths[i] as number)).join('  ');
  const out = [line(head), ...rows.map(line), ''];
  // The put rate of each ring size against the one-node ring's, in this run (issue 15: R = 3 at least 0.5x).
  for (const p of phases) {
    const one = phases.find((q) => q.nodes === 1 && q.op === p.op && q.routing === p.routing);
    if (!one || p.nodes === 1 || one.opsPerSec === 0) continue;
    const cpu = p.cpuUsPerOp !== null && one.cpuUsPerOp ? `; CPU per op ${(p.cpuUsPerOp / one.cpuUsPerOp).toFixed(2)}x the 1 node's` : '';
    out.push(`ratio ${p.nodes} nodes / 1 node, ${p.op} via '${p.routing}': ${(p.opsPerSec / one.opsPerSec).toFixed(3)} ops/s${cpu}`);
  }
  out.push('');
  out.push('restore R copies after kill -9 of one enclave:');
  for (const r of restores) {
    out.push(`  ${r.nodes} nodes: ${r.keys} keys back to R copies in ${r.seconds ?? 'NOT RESTORED'} s` +
      ` (${r.secondsPer10kKeys ?? '-'} s per 10,000 keys; the enclave answered again after ${r.relaunchSeconds} s)`);
  }
  return out.join('\n') + '\n';
}

async function main(): Promise<void> {
  const phases: PhaseResult[] = [];
  const restores: RestoreResult[] = [];
  for (const n of sizes) {
    const r = await benchRing(n);
    phases.push(...r.phases);
    if (r.restore) restores.push(r.restore);
  }
  const config = { clients, connections, seconds: phaseMs / 1000, valueBytes, keys: keyCount, restoreKeys, sealed: argv.seal, coldSessions: argv['cold-sessions'] };
  if (argv.json) process.stdout.write(JSON.stringify({ config, phases, restores, profiles }) + '\n');
  else {
    process.stdout.write(`config ${JSON.stringify(config)}\n` + table(phases, restores));
    for (const p of profiles) process.stdout.write(formatSummary(p) + '\n');
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:ring: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
