/**
 * `npm run bench:kv`: one emulated ekv node against a Redis server on
 * loopback, under the same load generator and settings: N concurrent clients
 * (closed loop, one request outstanding each) over C connections, 100-byte
 * values, a get-heavy (90/10) and a put-heavy (10/90) mix. Prints ops/s and
 * p50/p99 latency for each, and the ekv/redis throughput ratio per mix.
 * Progress goes to stderr; the table (or --json) to stdout.
 *
 * Two pairs, persistence matched (issue 15's fair baselines):
 *   ekv sealed (every acknowledged write in its fsynced, sealed log)  vs  Redis appendonly yes + appendfsync always
 *   ekv --no-seal (memory only)                                       vs  Redis without persistence (no RDB, no AOF)
 * and sealed/unsealed for the put-heavy mix.
 *
 * Then (unless --no-extra): authenticated vs anonymous gets (ACL of 1,000
 * entries), and the recovery time of a sealed node per 100,000 keys (see lib/kv-extra.ts).
 *
 *   npm run bench:kv -- --clients 64 --connections 4 --seconds 5 --value-bytes 100 [--ops N] [--json] [--no-redis] [--no-extra] [--recovery-keys N]
 *                       [--plot [--plot-dir DIR]]   also write SVG charts (default test/bench/charts/)
 */
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeBenchCharts } from './plot.ts';
import { connect, type EkvClient } from '../../client/index.ts';
import { startEkvNode } from './lib/ekv-node.ts';
import { authenticatedRun, recoveryRun } from './lib/kv-extra.ts';
import { preload, runMix, type KvConnection, type LoadSettings, type Mix } from './lib/harness.ts';
import { startRedis, type RedisPersistence } from './lib/redis.ts';
import { RespClient } from './lib/resp.ts';
import type { RunFigures } from './lib/stats.ts';

const mixes: Mix[] = [
  { name: 'get-heavy 90/10', getFraction: 0.9 },
  { name: 'put-heavy 10/90', getFraction: 0.1 },
];
const seed = 20261125;

const progress = (line: string) => process.stderr.write(`bench:kv: ${line}\n`);

function settings(): { s: LoadSettings; json: boolean; redis: boolean; extra: boolean; recoveryKeys: number; plot: string | null } {
  const { values } = parseArgs({
    options: {
      clients: { type: 'string', default: '64' },
      connections: { type: 'string', default: '4' },
      seconds: { type: 'string', default: '5' },
      ops: { type: 'string' },
      'value-bytes': { type: 'string', default: '100' },
      keys: { type: 'string', default: '10000' },
      warmup: { type: 'string', default: '1' },
      json: { type: 'boolean', default: false },
      'no-redis': { type: 'boolean', default: false },
      'no-extra': { type: 'boolean', default: false },
      'recovery-keys': { type: 'string', default: '100000' },
      plot: { type: 'boolean', default: false },
      'plot-dir': { type: 'string' },
    },
  });
  const int = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name} must be an integer in ${min}..${max}`);
    return n;
  };
  const clients = int('clients', values.clients, 1, 10_000);
  const s: LoadSettings = {
    clients,
    connections: Math.min(clients, int('connections', values.connections, 1, 10_000)),
    seconds: Number(values.seconds),
    ops: values.ops === undefined ? null : int('ops', values.ops, 1, 100_000_000),
    valueBytes: int('value-bytes', values['value-bytes'], 0, 512 * 1024),
    keys: int('keys', values.keys, 1, 10_000_000),
    warmupSeconds: Number(values.warmup),
  };
  if (!(s.seconds > 0 && s.seconds <= 3600) || !(s.warmupSeconds >= 0 && s.warmupSeconds <= 600)) {
    throw new Error('--seconds must be in (0, 3600], --warmup in [0, 600]');
  }
  const plot = values['plot-dir'] ?? (values.plot ? fileURLToPath(new URL('./charts/', import.meta.url)) : null);
  return { s, json: values.json, redis: !values['no-redis'], extra: !values['no-extra'], recoveryKeys: int('recovery-keys', values['recovery-keys'], 1000, 10_000_000), plot };
}

async function ekvConnections(clusterFile: string, n: number): Promise<KvConnection[]> {
  // One SDK client per connection (each keeps one connection to the node).
  const clients: EkvClient[] = [];
  for (let i = 0; i < n; i++) clients.push(await connect({ cluster: clusterFile, trustClusterFile: true, timeoutMs: 30_000 }));
  await Promise.all(clients.map((c) => c.verifyAll()));
  return clients.map((c) => ({ get: (k) => c.get(k), put: (k, v) => c.put(k, v), close: () => c.close() }));
}

async function redisConnections(host: string, port: number, n: number): Promise<KvConnection[]> {
  const conns = await Promise.all(Array.from({ length: n }, () => RespClient.connect(host, port)));
  return conns.map((c) => ({ get: (k) => c.get(k), put: (k, v) => c.set(k, v), close: () => c.close() }));
}

type Results = Record<string, Record<string, RunFigures>>;

/** The systems, in the order they run; each pair compares one ekv setting with its Redis counterpart. */
const sealedName = 'ekv sealed';
const unsealedName = 'ekv no-seal';
const redisAofName = 'redis aof-always';
const redisMemName = 'redis no-persist';
const pairs: Array<{ name: string; ekv: string; redis: string }> = [
  { name: 'persistence matched (ekv sealed / redis appendfsync always)', ekv: sealedName, redis: redisAofName },
  { name: 'memory only (ekv --no-seal / redis without persistence)', ekv: unsealedName, redis: redisMemName },
];

async function measure(system: string, conns: KvConnection[], s: LoadSettings, results: Results): Promise<void> {
  progress(`${system}: preloading ${s.keys} keys of ${s.valueBytes} bytes`);
  await preload(conns, s, Buffer.alloc(s.valueBytes, 0x62));
  for (const mix of mixes) {
    progress(`${system}: ${mix.name}, ${s.clients} clients over ${s.connections} connections, ${s.ops ?? `${s.seconds} s`} (+${s.warmupSeconds} s warm-up)`);
    const f = await runMix(conns, s, mix, seed);
    progress(`${system}: ${mix.name}: ${Math.round(f.opsPerSec)} ops/s, p50 ${f.p50Ms.toFixed(3)} ms, p99 ${f.p99Ms.toFixed(3)} ms, ${f.errors} errors`);
    (results[mix.name] ??= {})[system] = f;
  }
}

function printTable(results: Results, s: LoadSettings): void {
  const out: string[] = [];
  out.push(`clients ${s.clients}, connections ${s.connections}, value ${s.valueBytes} B, keys ${s.keys}`);
  out.push(`${'mix'.padEnd(17)}${'system'.padEnd(18)}${'ops/s'.padStart(10)}${'p50 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'errors'.padStart(8)}`);
  for (const [mix, bySystem] of Object.entries(results)) {
    for (const [system, f] of Object.entries(bySystem)) {
      out.push(`${mix.padEnd(17)}${system.padEnd(18)}${Math.round(f.opsPerSec).toString().padStart(10)}${f.p50Ms.toFixed(3).padStart(10)}${f.p99Ms.toFixed(3).padStart(10)}${String(f.errors).padStart(8)}`);
    }
  }
  const r = ratios(results);
  for (const pair of pairs) {
    for (const [mix, v] of Object.entries(r[pair.name] ?? {})) out.push(`ratio ${pair.name}, ${mix}: ${v.toFixed(3)}`);
  }
  const sealedPuts = results[mixes[1]!.name];
  if (sealedPuts?.[sealedName] && sealedPuts[unsealedName]) {
    out.push(`ratio sealed/unsealed ekv puts (${mixes[1]!.name}): ${(sealedPuts[sealedName].opsPerSec / sealedPuts[unsealedName].opsPerSec).toFixed(3)}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

/** Per pair, per mix: ekv ops/s over its Redis counterpart's. */
function ratios(results: Results): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const pair of pairs) {
    for (const [mix, bySystem] of Object.entries(results)) {
      const e = bySystem[pair.ekv];
      const r = bySystem[pair.redis];
      if (e && r) (out[pair.name] ??= {})[mix] = e.opsPerSec / r.opsPerSec;
    }
  }
  return out;
}

interface Extra {
  authenticated?: Awaited<ReturnType<typeof authenticatedRun>>;
  recovery?: Awaited<ReturnType<typeof recoveryRun>>;
}

async function extraRuns(s: LoadSettings, recoveryKeys: number): Promise<Extra> {
  const extra: Extra = {};
  const node = await startEkvNode(progress);
  try {
    extra.authenticated = await authenticatedRun(node.clusterFile, { ...s, keys: 1000 }, seed, progress);
    extra.recovery = await recoveryRun(node, recoveryKeys, progress);
  } finally {
    await node.stop();
  }
  return extra;
}

function printExtra(e: Extra): void {
  const out: string[] = [];
  if (e.authenticated) {
    const a = e.authenticated;
    out.push(`authenticated gets (ACL of 1,000 entries): ${Math.round(a.authenticated.opsPerSec)} ops/s vs anonymous ${Math.round(a.anonymous.opsPerSec)} ops/s, ratio ${a.ratio.toFixed(3)}`);
  }
  if (e.recovery) {
    out.push(`recovery of a sealed node: ${e.recovery.keys} keys back in ${e.recovery.recoveryMs} ms (kill -9 to serving, incl. 500 ms relaunch delay); ${Math.round(e.recovery.perHundredThousandMs)} ms per 100,000 keys`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

async function ekvRun(name: string, args: string[], s: LoadSettings, results: Results): Promise<void> {
  const node = await startEkvNode(progress, args);
  try {
    const conns = await ekvConnections(node.clusterFile, s.connections);
    await measure(name, conns, s, results);
    await Promise.all(conns.map((c) => c.close()));
  } finally {
    await node.stop();
  }
}

async function redisRun(name: string, persistence: RedisPersistence, s: LoadSettings, results: Results): Promise<void> {
  const server = await startRedis(progress, persistence);
  try {
    const conns = await redisConnections(server.host, server.port, s.connections);
    await measure(name, conns, s, results);
    await Promise.all(conns.map((c) => c.close()));
  } finally {
    await server.stop();
  }
}

async function main(): Promise<void> {
  const { s, json, redis, extra: wantExtra, recoveryKeys, plot } = settings();
  const results: Results = {};
  await ekvRun(sealedName, [], s, results);
  if (redis) await redisRun(redisAofName, 'aof-always', s, results);
  await ekvRun(unsealedName, ['--no-seal'], s, results);
  if (redis) await redisRun(redisMemName, 'none', s, results);
  const extra = wantExtra ? await extraRuns(s, recoveryKeys) : {};
  if (plot !== null) {
    const caption = `${s.clients} clients over ${s.connections} connections, ${s.valueBytes}-byte values, ${s.keys} keys, one node on loopback`;
    const puts = results[mixes[1]!.name];
    const sealedPair = puts?.[sealedName] && puts[unsealedName] ? { sealed: puts[sealedName], unsealed: puts[unsealedName] } : undefined;
    for (const f of await writeBenchCharts(plot, results, caption, sealedPair)) progress(`wrote ${f}`);
  }
  if (json) process.stdout.write(JSON.stringify({ settings: s, results, ratio: ratios(results), extra }) + '\n');
  else {
    printTable(results, s);
    printExtra(extra);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:kv: failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
