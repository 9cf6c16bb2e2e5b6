/**
 * `npm run bench:kv`: one emulated ekv node against a Redis server on
 * loopback, under the same load generator and settings: N concurrent clients
 * (closed loop, one request outstanding each) over C connections, 100-byte
 * values, a get-heavy (90/10) and a put-heavy (10/90) mix. Prints ops/s and
 * p50/p99 latency for each, and the ekv/redis throughput ratio per mix.
 * Progress goes to stderr; the table (or --json) to stdout.
 *
 * Then (unless --no-extra): sealed vs unsealed puts, authenticated vs anonymous gets (ACL of 1,000
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
import { startRedis } from './lib/redis.ts';
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
  out.push(`${'mix'.padEnd(17)}${'system'.padEnd(8)}${'ops/s'.padStart(10)}${'p50 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'errors'.padStart(8)}`);
  for (const [mix, bySystem] of Object.entries(results)) {
    for (const [system, f] of Object.entries(bySystem)) {
      out.push(`${mix.padEnd(17)}${system.padEnd(8)}${Math.round(f.opsPerSec).toString().padStart(10)}${f.p50Ms.toFixed(3).padStart(10)}${f.p99Ms.toFixed(3).padStart(10)}${String(f.errors).padStart(8)}`);
    }
  }
  for (const [mix, r] of Object.entries(ratios(results))) out.push(`ratio ekv/redis, ${mix}: ${r.toFixed(3)}`);
  process.stdout.write(out.join('\n') + '\n');
}

function ratios(results: Results): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [mix, bySystem] of Object.entries(results)) {
    if (bySystem.ekv && bySystem.redis) out[mix] = bySystem.ekv.opsPerSec / bySystem.redis.opsPerSec;
  }
  return out;
}

interface Extra {
  sealedPuts?: { sealed: RunFigures; unsealed: RunFigures; ratio: number };
  authenticated?: Awaited<ReturnType<typeof authenticatedRun>>;
  recovery?: Awaited<ReturnType<typeof recoveryRun>>;
}

async function extraRuns(s: LoadSettings, recoveryKeys: number, results: Results): Promise<Extra> {
  const extra: Extra = {};
  const putHeavy = mixes[1] as Mix;
  // The default node seals (the main run above); the same mix on a node without sealing is the baseline.
  const plain = await startEkvNode(progress, ['--no-seal']);
  try {
    const conns = await ekvConnections(plain.clusterFile, s.connections);
    progress('ekv --no-seal: preloading');
    await preload(conns, s, Buffer.alloc(s.valueBytes, 0x62));
    progress(`ekv --no-seal: ${putHeavy.name}`);
    const unsealed = await runMix(conns, s, putHeavy, seed);
    await Promise.all(conns.map((c) => c.close()));
    const sealed = results[putHeavy.name]?.ekv as RunFigures;
    extra.sealedPuts = { sealed, unsealed, ratio: sealed.opsPerSec / unsealed.opsPerSec };
  } finally {
    await plain.stop();
  }
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
  if (e.sealedPuts) {
    out.push(`sealed puts (put-heavy 10/90): ${Math.round(e.sealedPuts.sealed.opsPerSec)} ops/s sealed, ${Math.round(e.sealedPuts.unsealed.opsPerSec)} ops/s unsealed, ratio sealed/unsealed ${e.sealedPuts.ratio.toFixed(3)}`);
  }
  if (e.authenticated) {
    const a = e.authenticated;
    out.push(`authenticated gets (ACL of 1,000 entries): ${Math.round(a.authenticated.opsPerSec)} ops/s vs anonymous ${Math.round(a.anonymous.opsPerSec)} ops/s, ratio ${a.ratio.toFixed(3)}`);
  }
  if (e.recovery) {
    out.push(`recovery of a sealed node: ${e.recovery.keys} keys back in ${e.recovery.recoveryMs} ms (kill -9 to serving, incl. 500 ms relaunch delay); ${Math.round(e.recovery.perHundredThousandMs)} ms per 100,000 keys`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

async function main(): Promise<void> {
  const { s, json, redis, extra: wantExtra, recoveryKeys, plot } = settings();
  const results: Results = {};
  const node = await startEkvNode(progress);
  try {
    const conns = await ekvConnections(node.clusterFile, s.connections);
    await measure('ekv', conns, s, results);
    await Promise.all(conns.map((c) => c.close()));
  } finally {
    await node.stop();
  }
  const extra = wantExtra ? await extraRuns(s, recoveryKeys, results) : {};
  if (redis) {
    const server = await startRedis(progress);
    try {
      const conns = await redisConnections(server.host, server.port, s.connections);
      await measure('redis', conns, s, results);
      await Promise.all(conns.map((c) => c.close()));
    } finally {
      await server.stop();
    }
  }
  if (plot !== null) {
    const caption = `${s.clients} clients over ${s.connections} connections, ${s.valueBytes}-byte values, ${s.keys} keys, one node on loopback`;
    for (const f of await writeBenchCharts(plot, results, caption, extra.sealedPuts)) progress(`wrote ${f}`);
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
