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
//   npx tsx test/bench/ring.ts [--nodes 1,3,5] [--clients 32] [--seconds 5] [--value-bytes 100]
//                              [--keys 2000] [--restore-keys 10000] [--seal] [--json]
//                              [--routings cached,any] [--no-restore]   (fewer phases, for a quick before/after)
// Progress goes to stderr, the table (or one JSON object) to stdout.
import { parseArgs } from 'node:util';
import { connect, type EkvClient, type Routing } from '../../client/index.ts';
import { RingFixture, type NodeView } from '../helpers/ring-fixture.ts';

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
    seconds: { type: 'string', default: '5' },
    'value-bytes': { type: 'string', default: '100' },
    keys: { type: 'string', default: '2000' },
    'restore-keys': { type: 'string', default: '10000' },
    'restore-deadline': { type: 'string', default: '120' },
    seal: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    routings: { type: 'string', default: 'cached,any' },
    'no-restore': { type: 'boolean', default: false },
  },
});
const sizes = (argv.nodes as string).split(',').map(Number);
const clients = Number(argv.clients);
const phaseMs = Number(argv.seconds) * 1000;
const valueBytes = Number(argv['value-bytes']);
const keyCount = Number(argv.keys);
const restoreKeys = Number(argv['restore-keys']);
const restoreDeadlineMs = Number(argv['restore-deadline']) * 1000;
const progress = (line: string) => process.stderr.write(`bench:ring: ${line}\n`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

function totals(views: NodeView[], field: 'lookups' | 'hops'): number {
  return views.reduce((s, v) => s + v[field], 0);
}

async function forwards(fx: RingFixture): Promise<number> {
  let n = 0;
  for (const addr of fx.addrs()) {
    const s = await (await fx.client(addr)).node(addr).call('status', {});
    n += typeof s.forwards === 'number' ? s.forwards : 0;
  }
  return n;
}

/** `clients` loops doing `op` on random keys for `phaseMs`; latencies in ms. */
async function runPhase(fx: RingFixture, op: 'put' | 'get', routing: Routing, keys: Buffer[]): Promise<PhaseResult> {
  const kvs: EkvClient[] = await Promise.all(Array.from({ length: clients }, () => connect({ cluster: fx.ring.cluster, trustClusterFile: true, routing, timeoutMs: 10_000 })));
  const value = Buffer.alloc(valueBytes, 0x61);
  // Warm up: every client verifies every node it will use before the clock starts.
  await Promise.all(kvs.map((kv) => kv.verifyAll()));
  await Promise.all(kvs.map((kv, i) => kv.get(keys[i % keys.length] as Buffer)));
  const before = { views: await fx.statusAll(), forwards: await forwards(fx) };
  const lat: number[] = [];
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + phaseMs;
  await Promise.all(kvs.map(async (kv, c) => {
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
  const after = { views: await fx.statusAll(), forwards: await forwards(fx) };
  await Promise.all(kvs.map((kv) => kv.close()));
  lat.sort((a, b) => a - b);
  const lookups = totals(after.views, 'lookups') - totals(before.views, 'lookups');
  const hops = totals(after.views, 'hops') - totals(before.views, 'hops');
  return {
    nodes: fx.members.length, op, routing, ops: lat.length, errors,
    opsPerSec: Math.round(lat.length / elapsed),
    p50Ms: round(percentile(lat, 50)), p99Ms: round(percentile(lat, 99)),
    lookups, meanHops: lookups > 0 ? round(hops / lookups) : null,
    forwardsPerOp: lat.length > 0 ? round((after.forwards - before.forwards) / lat.length) : 0,
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

async function benchRing(nodes: number): Promise<{ phases: PhaseResult[]; restore: RestoreResult | null }> {
  const replicas = Math.min(3, nodes);
  progress(`starting a ${nodes}-node ring (R=${replicas}${argv.seal ? ', sealed' : ''})`);
  const fx = await RingFixture.start({ nodes, replicas, seal: argv.seal as boolean });
  try {
    await fx.waitSettled(60_000);
    const keys = Array.from({ length: keyCount }, (_, i) => Buffer.from(`bench-${i}`));
    await writeAll(fx, keys);
    const phases: PhaseResult[] = [];
    for (const routing of (argv.routings as string).split(',') as Routing[]) {
      for (const op of ['put', 'get'] as const) {
        progress(`${nodes} nodes: ${op} via '${routing}' routing, ${clients} clients, ${phaseMs / 1000} s`);
        phases.push(await runPhase(fx, op, routing, keys));
      }
    }
    // One node cannot restore anything, and with R=3 a 3-node ring needs the relaunched node back.
    const restore = nodes > 1 && !argv['no-restore'] ? await measureRestore(fx) : null;
    return { phases, restore };
  } finally {
    await fx.stop();
  }
}

function table(phases: PhaseResult[], restores: RestoreResult[]): string {
  const head = ['nodes', 'op', 'routing', 'ops/s', 'p50 ms', 'p99 ms', 'errors', 'lookups', 'mean hops', 'fwd/op'];
  const rows = phases.map((p) => [p.nodes, p.op, p.routing, p.opsPerSec, p.p50Ms, p.p99Ms, p.errors, p.lookups, p.meanHops ?? '-', p.forwardsPerOp].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (r: string[]) => r.map((c, i) => c.padStart(widths[i] as number)).join('  ');
  const out = [line(head), ...rows.map(line), ''];
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
  const config = { clients, seconds: phaseMs / 1000, valueBytes, keys: keyCount, restoreKeys, sealed: argv.seal };
  if (argv.json) process.stdout.write(JSON.stringify({ config, phases, restores }) + '\n');
  else process.stdout.write(`config ${JSON.stringify(config)}\n` + table(phases, restores));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench:ring: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
