/**
 * `npm run bench:cli`: what one command from a shell costs, against a running local node (started here
 * by `ekv up --nodes 1`, sealed, in its own process), in median wall time over interleaved runs:
 *   floor        node -e ''                       (starting Node at all)
 *   redis-cli    redis-cli -p PORT get k           (when redis-server and redis-cli are installed)
 *   ekv get      node bin/ekv.js get k -c FILE     (the compiled CLI: connect, attest, get)
 * and the ratios ekv/floor (issue 15's target: at most 2x), redis-cli/floor, ekv/redis-cli. Then the pipe
 * mode: N operations (half puts, half gets) through one `ekv batch` process, wall time from spawn to exit,
 * against the same N calls made one after another by the SDK in this process (connect and attestation
 * included), and their ratio.
 *
 *   npm run bench:cli -- [--runs 30] [--ops 1000] [--json]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect } from '../../client/index.ts';
import { startEkvNode } from './lib/ekv-node.ts';
import { startRedis, type RedisServer } from './lib/redis.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

const ekvBin = fileURLToPath(new URL('../../bin/ekv.js', import.meta.url));
const progress = (line: string) => process.stderr.write(`bench:cli: ${line}\n`);

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '30' }, ops: { type: 'string', default: '1000' }, json: { type: 'boolean', default: false } },
});
const runs = Number(values.runs);
const ops = Number(values.ops);
if (!Number.isInteger(runs) || runs < 3 || runs > 1000) throw new Error('--runs must be 3..1000');
if (!Number.isInteger(ops) || ops < 2 || ops > 1_000_000) throw new Error('--ops must be 2..1000000');

// The ring's `ekv up` records its trust section in the trust store; keep that out of the user's ~/.config.
const trustDir = mkdtempSync(join(tmpdir(), 'ekv-bench-trust-'));
process.env.EKV_TRUST_DIR = trustDir;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Wall time of one run, ms; throws unless it exits 0 with the expected output. */
function timeOnce(cmd: string, args: string[], expect: string | null): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.slice(0, 300)}`);
  if (expect !== null && r.stdout.trim() !== expect) throw new Error(`${cmd} ${args.join(' ')} printed ${JSON.stringify(r.stdout.slice(0, 100))}`);
  return ms;
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

/** One `ekv batch` process for `lines`; wall time from spawn to exit, ms. */
function batchOnce(cluster: string, lines: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(process.execPath, [ekvBin, 'batch', '-c', cluster], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      for (const b of d) if (b === 0x0a) out++;
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (code !== 0 || out !== lines.length) reject(new Error(`ekv batch exited ${code} after ${out}/${lines.length} lines: ${err.slice(0, 300)}`));
      else resolve(ms);
    });
    child.stdin.end(lines.join('\n') + '\n');
  });
}

async function sdkOnce(cluster: string, n: number, prefix: string): Promise<number> {
  const start = process.hrtime.bigint();
  const kv = await connect({ cluster, trustClusterFile: true, timeoutMs: 30_000 });
  try {
    for (let i = 0; i < n / 2; i++) {
      await kv.put(`${prefix}${i}`, `value-${i}`);
      await kv.get(`${prefix}${i}`);
    }
  } finally {
    await kv.close();
  }
  return Number(process.hrtime.bigint() - start) / 1e6;
}

async function main(): Promise<void> {
  const node = await startEkvNode(progress);
  let redis: RedisServer | null = null;
  try {
    const setup = spawnSync(process.execPath, [ekvBin, 'put', 'bench/k', 'hello', '-c', node.clusterFile], { encoding: 'utf8' });
    if (setup.status !== 0) throw new Error(`ekv put failed: ${setup.stderr}`);
    const withRedis = hasCommand('redis-server') && hasCommand('redis-cli');
    if (withRedis) {
      redis = await startRedis(progress, 'none');
      timeOnce('redis-cli', ['-p', String(redis.port), 'set', 'bench/k', 'hello'], 'OK');
    } else progress('redis-server or redis-cli not installed: no redis-cli figure (apt-get install -y redis-server)');

    const cases: Array<{ name: string; cmd: string; args: string[]; expect: string | null }> = [
      { name: 'floor', cmd: process.execPath, args: ['-e', ''], expect: '' },
      ...(redis ? [{ name: 'redis-cli', cmd: 'redis-cli', args: ['-p', String(redis.port), 'get', 'bench/k'], expect: 'hello' }] : []),
      { name: 'ekv get', cmd: process.execPath, args: [ekvBin, 'get', 'bench/k', '-c', node.clusterFile], expect: 'hello' },
    ];
    const times = new Map<string, number[]>(cases.map((c) => [c.name, []]));
    for (const c of cases) timeOnce(c.cmd, c.args, c.expect); // warm-up: page cache, the node's first session
    progress(`single commands: ${runs} interleaved runs each`);
    for (let i = 0; i < runs; i++) for (const c of cases) times.get(c.name)!.push(timeOnce(c.cmd, c.args, c.expect));
    const med = Object.fromEntries([...times].map(([k, v]) => [k, median(v)])) as Record<string, number>;

    progress(`pipe mode: ${ops} operations through one ekv batch vs ${ops} SDK calls in this process (3 rounds, interleaved)`);
    const lines: string[] = [];
    for (let i = 0; i < ops / 2; i++) lines.push(`put bench/b${i} value-${i}`, `get bench/b${i}`);
    const batchTimes: number[] = [];
    const sdkTimes: number[] = [];
    for (let round = 0; round < 3; round++) {
      batchTimes.push(await batchOnce(node.clusterFile, lines));
      sdkTimes.push(await sdkOnce(node.clusterFile, ops, `bench/s${round}-`));
    }
    const pipe = { ops, batchMs: median(batchTimes), sdkMs: median(sdkTimes) };

    const floor = med['floor'] as number;
    const ekvGet = med['ekv get'] as number;
    const redisCli = med['redis-cli'];
    const result = {
      runs,
      medianMs: med,
      ratios: {
        ekvOverFloor: ekvGet / floor,
        ...(redisCli !== undefined ? { redisCliOverFloor: redisCli / floor, ekvOverRedisCli: ekvGet / redisCli } : {}),
      },
      pipe: { ...pipe, batchOverSdk: pipe.batchMs / pipe.sdkMs, batchMsPerOp: pipe.batchMs / ops, sdkMsPerOp: pipe.sdkMs / ops },
    };
    if (values.json) {
      process.stdout.write(JSON.stringify(result) + '\n');
      return;
    }
    const out: string[] = [];
    out.push(`single command, median wall over ${runs} interleaved runs:`);
    out.push(`  floor      node -e ''          ${floor.toFixed(1).padStart(8)} ms`);
    if (redisCli !== undefined) out.push(`  redis-cli  get                 ${redisCli.toFixed(1).padStart(8)} ms   ${(redisCli / floor).toFixed(2)}x the floor`);
    out.push(`  ekv get    (compiled CLI)      ${ekvGet.toFixed(1).padStart(8)} ms   ${(ekvGet / floor).toFixed(2)}x the floor (target <= 2x)${redisCli !== undefined ? `, ${(ekvGet / redisCli).toFixed(1)}x redis-cli` : ''}`);
    out.push(`pipe mode, ${ops} operations (half puts, half gets), median of 3:`);
    out.push(`  ekv batch (one process, spawn to exit)  ${pipe.batchMs.toFixed(0).padStart(7)} ms  (${(pipe.batchMs / ops).toFixed(3)} ms/op)`);
    out.push(`  SDK, ${ops} awaited calls (connect incl.) ${pipe.sdkMs.toFixed(0).padStart(7)} ms  (${(pipe.sdkMs / ops).toFixed(3)} ms/op)`);
    out.push(`  ratio batch/SDK ${(pipe.batchMs / pipe.sdkMs).toFixed(2)}`);
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await redis?.stop();
    await node.stop();
    rmSync(trustDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:cli: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
