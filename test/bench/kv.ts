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
 * Per run it also prints the server's CPU per operation (the `ekv up` process tree: host proxy, blob store,
 * emulated KMS and NSM, enclave; Redis: redis-server), from /proc/<pid>/stat before and after the measured
 * window, and the load generator's own CPU per operation (the SDK, or the RESP client), with the 1-minute
 * load average at the end of the window (a shared machine shows up there).
 *
 *   npm run bench:kv -- --clients 64 --connections 4 --seconds 5 --value-bytes 100 [--ops N] [--json] [--no-redis] [--no-extra] [--recovery-keys N]
 *                       [--systems sealed,redis-aof,no-seal,redis-mem] [--mixes get,put]
 *                       [--cpu-prof [--prof-dir DIR]]   V8 profiles of the enclave, the host process and the load generator
 *                                                       (ekv runs), summarized as the top costs per operation
 *                       [--plot [--plot-dir DIR]]   also write SVG charts (default test/bench/charts/)
 */
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadAverage, selfCpuSeconds, treeCpuSeconds } from './lib/cpu.ts';
import { formatSummary, readProfile, summarizeProfile, type CpuProfile, type ProfileSummary } from './lib/cpuprofile.ts';
import { writeBenchCharts } from './plot.ts';
import { connect, type EkvClient } from '../../client/index.ts';
import { startEkvNode } from './lib/ekv-node.ts';
import { authenticatedRun, recoveryRun } from './lib/kv-extra.ts';
import { preload, runMix, type KvConnection, type LoadSettings, type MeasureWindow, type Mix } from './lib/harness.ts';
import { startRedis, type RedisPersistence } from './lib/redis.ts';
import { RespClient } from './lib/resp.ts';
import type { RunFigures } from './lib/stats.ts';
import { helpFromHeader } from './lib/help.ts';
import { formatSealFigures, scrapeMetrics, sealFigures, type PromSample, type SealFigures } from './lib/seal-figures.ts';

helpFromHeader(import.meta.url);

const allMixes: Array<Mix & { id: string }> = [
  { id: 'get', name: 'get-heavy 90/10', getFraction: 0.9 },
  { id: 'put', name: 'put-heavy 10/90', getFraction: 0.1 },
];
let mixes: Mix[] = allMixes;
const seed = 20261125;

const progress = (line: string) => process.stderr.write(`bench:kv: ${line}\n`);

interface Cli {
  s: LoadSettings;
  json: boolean;
  redis: boolean;
  extra: boolean;
  recoveryKeys: number;
  plot: string | null;
  systems: string[];
  profDir: string | null;
}

const systemIds = ['sealed', 'redis-aof', 'no-seal', 'redis-mem'];

function settings(): Cli {
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
      systems: { type: 'string', default: systemIds.join(',') },
      mixes: { type: 'string', default: 'get,put' },
      'cpu-prof': { type: 'boolean', default: false },
      'prof-dir': { type: 'string' },
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
  const systems = values.systems.split(',').filter((x) => x !== '');
  for (const x of systems) if (!systemIds.includes(x)) throw new Error(`--systems takes ${systemIds.join(',')}`);
  const mixIds = values.mixes.split(',').filter((x) => x !== '');
  mixes = allMixes.filter((m) => mixIds.includes(m.id));
  if (mixes.length === 0 || mixIds.some((x) => !allMixes.some((m) => m.id === x))) throw new Error('--mixes takes get,put');
  const profDir = values['prof-dir'] ?? (values['cpu-prof'] ? join(tmpdir(), `ekv-prof-${Date.now()}`) : null);
  return {
    s, json: values.json, redis: !values['no-redis'], extra: !values['no-extra'],
    recoveryKeys: int('recovery-keys', values['recovery-keys'], 1000, 10_000_000), plot, systems, profDir,
  };
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

/** A run's figures with the CPU each side used per operation in the measured window (null: not measurable here). */
type Figures = RunFigures & { serverCpuUsPerOp: number | null; clientCpuUsPerOp: number; loadAvg: number; seal?: SealFigures };
type Results = Record<string, Record<string, Figures>>;

/** Counts every operation issued through the connections (preload and warm-up too), for the profiles' per-op costs. */
function counted(conns: KvConnection[], counter: { ops: number }): KvConnection[] {
  return conns.map((c) => ({
    get: (k) => (counter.ops++, c.get(k)),
    put: (k, v) => (counter.ops++, c.put(k, v)),
    close: () => c.close(),
  }));
}

/** The systems, in the order they run; each pair compares one ekv setting with its Redis counterpart. */
const sealedName = 'ekv sealed';
const unsealedName = 'ekv no-seal';
const redisAofName = 'redis aof-always';
const redisMemName = 'redis no-persist';
const pairs: Array<{ name: string; ekv: string; redis: string }> = [
  { name: 'persistence matched (ekv sealed / redis appendfsync always)', ekv: sealedName, redis: redisAofName },
  { name: 'memory only (ekv --no-seal / redis without persistence)', ekv: unsealedName, redis: redisMemName },
];

/** `http`: an ekv node's host, scraped at the window's start and end for where a sealed put's time goes (lib/seal-figures.ts). */
async function measure(system: string, conns: KvConnection[], s: LoadSettings, results: Results, serverPid: number, http: string | null = null): Promise<void> {
  progress(`${system}: preloading ${s.keys} keys of ${s.valueBytes} bytes`);
  await preload(conns, s, Buffer.alloc(s.valueBytes, 0x62));
  for (const mix of mixes) {
    progress(`${system}: ${mix.name}, ${s.clients} clients over ${s.connections} connections, ${s.ops ?? `${s.seconds} s`} (+${s.warmupSeconds} s warm-up)`);
    let server0: number | null = null;
    let server1: number | null = null;
    let client0 = 0;
    let client1 = 0;
    let metrics0: Promise<PromSample[] | null> = Promise.resolve(null);
    let metrics1: Promise<PromSample[] | null> = Promise.resolve(null);
    const window: MeasureWindow = {
      start: () => {
        if (http !== null) metrics0 = scrapeMetrics(http);
        server0 = treeCpuSeconds(serverPid);
        client0 = selfCpuSeconds();
      },
      end: () => {
        if (http !== null) metrics1 = scrapeMetrics(http);
        server1 = treeCpuSeconds(serverPid);
        client1 = selfCpuSeconds();
      },
    };
    const run = await runMix(conns, s, mix, seed, window);
    const ops = Math.max(1, run.ops + run.errors);
    const serverCpu = server0 !== null && server1 !== null ? ((server1 - server0) * 1e6) / ops : null;
    const f: Figures = { ...run, serverCpuUsPerOp: serverCpu, clientCpuUsPerOp: ((client1 - client0) * 1e6) / ops, loadAvg: loadAverage() };
    const [m0, m1] = await Promise.all([metrics0, metrics1]);
    const seal = m0 !== null && m1 !== null ? sealFigures(m0, m1, ops) : null;
    if (seal !== null) f.seal = seal;
    progress(
      `${system}: ${mix.name}: ${Math.round(f.opsPerSec)} ops/s, p50 ${f.p50Ms.toFixed(3)} ms, p99 ${f.p99Ms.toFixed(3)} ms, max ${f.maxMs.toFixed(1)} ms, ${f.errors} errors, ` +
        `server CPU ${serverCpu === null ? '-' : serverCpu.toFixed(1)} us/op, client CPU ${f.clientCpuUsPerOp.toFixed(1)} us/op, load ${f.loadAvg.toFixed(2)}`,
    );
    if (seal !== null) progress(`${system}: ${mix.name}: ${formatSealFigures(seal)}`);
    (results[mix.name] ??= {})[system] = f;
  }
}

function printTable(results: Results, s: LoadSettings): void {
  const out: string[] = [];
  out.push(`clients ${s.clients}, connections ${s.connections}, value ${s.valueBytes} B, keys ${s.keys}`);
  out.push(
    `${'mix'.padEnd(17)}${'system'.padEnd(18)}${'ops/s'.padStart(10)}${'p50 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'max ms'.padStart(10)}${'errors'.padStart(8)}` +
      `${'srv us/op'.padStart(11)}${'cli us/op'.padStart(11)}${'load'.padStart(7)}`,
  );
  for (const [mix, bySystem] of Object.entries(results)) {
    for (const [system, f] of Object.entries(bySystem)) {
      out.push(
        `${mix.padEnd(17)}${system.padEnd(18)}${Math.round(f.opsPerSec).toString().padStart(10)}${f.p50Ms.toFixed(3).padStart(10)}${f.p99Ms.toFixed(3).padStart(10)}${f.maxMs.toFixed(1).padStart(10)}${String(f.errors).padStart(8)}` +
          `${(f.serverCpuUsPerOp === null ? '-' : f.serverCpuUsPerOp.toFixed(1)).padStart(11)}${f.clientCpuUsPerOp.toFixed(1).padStart(11)}${f.loadAvg.toFixed(2).padStart(7)}`,
      );
    }
  }
  const r = ratios(results);
  for (const pair of pairs) {
    for (const [mix, v] of Object.entries(r[pair.name] ?? {})) out.push(`ratio ${pair.name}, ${mix}: ${v.toFixed(3)}`);
  }
  for (const pair of pairs) {
    for (const [mix, bySystem] of Object.entries(results)) {
      const e = bySystem[pair.ekv];
      const r = bySystem[pair.redis];
      if (e?.serverCpuUsPerOp && r?.serverCpuUsPerOp) {
        out.push(`server CPU per op ${pair.ekv} / ${pair.redis}, ${mix}: ${(e.serverCpuUsPerOp / r.serverCpuUsPerOp).toFixed(1)}x; client CPU per op (SDK / RESP client): ${(e.clientCpuUsPerOp / r.clientCpuUsPerOp).toFixed(1)}x`);
      }
    }
  }
  const putMix = allMixes[1]!.name;
  const sealedPuts = results[putMix];
  if (sealedPuts?.[sealedName] && sealedPuts[unsealedName]) {
    out.push(`ratio sealed/unsealed ekv puts (${putMix}): ${(sealedPuts[sealedName].opsPerSec / sealedPuts[unsealedName].opsPerSec).toFixed(3)}`);
  }
  for (const [mix, bySystem] of Object.entries(results)) {
    const seal = bySystem[sealedName]?.seal;
    if (seal) out.push(`where a sealed put's time goes (${mix}): client p50 ${bySystem[sealedName]!.p50Ms.toFixed(2)} ms; ${formatSealFigures(seal)}`);
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

/** Profiles of one ekv run: the `ekv up` process, the enclave and the load generator, per operation issued. */
const profiles: Record<string, ProfileSummary[]> = {};

function newestProfile(dir: string): CpuProfile | null {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.cpuprofile')).sort();
  } catch {
    return null;
  }
  return names.length === 0 ? null : readProfile(join(dir, names[names.length - 1] as string));
}

async function ekvRun(name: string, args: string[], s: LoadSettings, results: Results, profDir: string | null): Promise<void> {
  const dir = profDir === null ? null : join(profDir, name.replace(/[^a-z0-9-]+/gi, '-'));
  if (dir !== null) mkdirSync(dir, { recursive: true });
  const node = await startEkvNode(progress, args, dir);
  const counter = { ops: 0 };
  let session: Session | null = null;
  try {
    const conns = counted(await ekvConnections(node.clusterFile, s.connections), counter);
    if (dir !== null) {
      session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    await measure(name, conns, s, results, node.pids.host, node.http);
    if (session !== null && dir !== null) {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(join(dir, 'load-generator.cpuprofile'), JSON.stringify(profile));
    }
    await Promise.all(conns.map((c) => c.close()));
  } finally {
    session?.disconnect();
    await node.stop();
  }
  if (dir !== null) {
    const out: ProfileSummary[] = [];
    for (const [label, file] of [['enclave', join(dir, 'enclave')], ['host (ekv up)', join(dir, 'host')]] as const) {
      const p = newestProfile(file);
      if (p === null) progress(`${name}: no profile in ${file}`);
      else out.push(summarizeProfile(p, `${name} ${label}`, counter.ops));
    }
    const lg = newestProfile(dir);
    if (lg !== null) out.push(summarizeProfile(lg, `${name} load generator (SDK)`, counter.ops));
    profiles[name] = out;
    progress(`${name}: profiles in ${dir} (${counter.ops} operations issued)`);
  }
}

async function redisRun(name: string, persistence: RedisPersistence, s: LoadSettings, results: Results): Promise<void> {
  const server = await startRedis(progress, persistence);
  try {
    const conns = await redisConnections(server.host, server.port, s.connections);
    await measure(name, conns, s, results, server.pid);
    await Promise.all(conns.map((c) => c.close()));
  } finally {
    await server.stop();
  }
}

async function main(): Promise<void> {
  const { s, json, redis, extra: wantExtra, recoveryKeys, plot, systems, profDir } = settings();
  const results: Results = {};
  progress(`load average at start: ${loadAverage().toFixed(2)}`);
  if (systems.includes('sealed')) await ekvRun(sealedName, [], s, results, profDir);
  if (redis && systems.includes('redis-aof')) await redisRun(redisAofName, 'aof-always', s, results);
  if (systems.includes('no-seal')) await ekvRun(unsealedName, ['--no-seal'], s, results, profDir);
  if (redis && systems.includes('redis-mem')) await redisRun(redisMemName, 'none', s, results);
  const extra = wantExtra ? await extraRuns(s, recoveryKeys) : {};
  if (plot !== null) {
    const caption = `${s.clients} clients over ${s.connections} connections, ${s.valueBytes}-byte values, ${s.keys} keys, one node on loopback`;
    const puts = results[allMixes[1]!.name];
    const sealedPair = puts?.[sealedName] && puts[unsealedName] ? { sealed: puts[sealedName], unsealed: puts[unsealedName] } : undefined;
    for (const f of await writeBenchCharts(plot, results, caption, sealedPair)) progress(`wrote ${f}`);
  }
  if (json) process.stdout.write(JSON.stringify({ settings: s, results, ratio: ratios(results), extra, profiles }) + '\n');
  else {
    printTable(results, s);
    printExtra(extra);
    for (const list of Object.values(profiles)) for (const p of list) process.stdout.write(formatSummary(p) + '\n');
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:kv: failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
