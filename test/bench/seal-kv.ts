// Sealed KV speed through the SDK and a real emulated enclave (issue 5, "Speed"):
// - put throughput of one node with sealing on vs off (startLocalRing seal true/false), C concurrent
//   clients (each its own SDK connection, one put at a time), for S seconds each;
// - recovery time of a real enclave restart (kill -9; LocalNode relaunches it) holding K keys, scaled to
//   100,000 keys: from 'enclave launched' to 'sealed state recovered' (the enclave's own log timestamps),
//   and from the kill to the node answering with all K keys (includes LocalNode's 500 ms relaunch delay).
//   npx tsx test/bench/seal-kv.ts [--clients 32] [--seconds 5] [--value 100] [--keys 100000]   (--keys 0: skip)
import { rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import pino from 'pino';
import { connect, type EkvClient } from '../../client/index.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import { shortTempDir } from '../helpers/local-ring.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

const logs: Array<Record<string, unknown>> = [];
const logger = pino({ level: 'info' }, new Writable({
  write(chunk: Buffer, _enc, done) {
    for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
    done();
  },
}));

async function withRing<T>(seal: boolean, body: (ring: LocalRing) => Promise<T>): Promise<T> {
  const dir = shortTempDir('ekv-bk-');
  const ring = await startLocalRing({ dir, nodes: 1, replicas: 1, logger, seal });
  try {
    return await body(ring);
  } finally {
    await ring.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function clients(ring: LocalRing, n: number): Promise<EkvClient[]> {
  const cs = await Promise.all(Array.from({ length: n }, () => connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 30_000 })));
  await Promise.all(cs.map((c) => c.verifyAll()));
  return cs;
}

/** Puts per second over `seconds`, `n` clients each with one put in flight. */
async function putThroughput(ring: LocalRing, n: number, seconds: number, valueBytes: number): Promise<number> {
  const cs = await clients(ring, n);
  const value = Buffer.alloc(valueBytes, 0x61);
  let done = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  await Promise.all(cs.map(async (c, ci) => {
    for (let i = 0; performance.now() < end; i++) {
      await c.put(`bench-${ci}-${i % 1000}`, value);
      done++;
    }
  }));
  const rate = done / ((performance.now() - t0) / 1000);
  await Promise.all(cs.map((c) => c.close()));
  return rate;
}

async function recovery(ring: LocalRing, keys: number, n: number, valueBytes: number): Promise<{ logMs: number; answerMs: number; entries: number }> {
  const cs = await clients(ring, n);
  const value = Buffer.alloc(valueBytes, 0x62);
  let next = 0;
  await Promise.all(cs.map(async (c) => {
    while (next < keys) await c.put(`recovery-${next++}`, value);
  }));
  await Promise.all(cs.map((c) => c.close()));
  const node = ring.nodes[0]!;
  const enclave = node.enclave!;
  const mark = logs.length;
  const t0 = performance.now();
  process.kill(enclave.pid, 'SIGKILL');
  await enclave.exited;
  for (;;) {
    if (node.enclave !== enclave) {
      try {
        const c = await connect({ cluster: ring.clusterFile, trustClusterFile: true, timeoutMs: 5000 });
        const s = await c.node(node.addr).call('status', {});
        await c.close();
        if (s.serving === true && (s.keys as number) >= keys) break;
      } catch {
        // not up yet
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const answerMs = performance.now() - t0;
  const since = logs.slice(mark);
  const launched = since.find((r) => r.msg === 'enclave launched');
  const recovered = since.find((r) => r.msg === 'sealed state recovered');
  if (!launched || !recovered) throw new Error('missing launch/recovery log lines');
  return { logMs: (recovered.time as number) - (launched.time as number), answerMs, entries: recovered.entries as number };
}

const n = arg('clients', 32);
const seconds = arg('seconds', 5);
const valueBytes = arg('value', 100);
const keys = arg('keys', 100_000);

const unsealed = await withRing(false, (r) => putThroughput(r, n, seconds, valueBytes));
const sealed = await withRing(true, (r) => putThroughput(r, n, seconds, valueBytes));
console.log(`put throughput, 1 node, ${n} clients, ${valueBytes}-byte values, ${seconds} s each:`);
console.log(`  unsealed ${unsealed.toFixed(0)} puts/s`);
console.log(`  sealed   ${sealed.toFixed(0)} puts/s`);
console.log(`  ratio sealed/unsealed ${(sealed / unsealed).toFixed(2)}`);
if (keys > 0) {
  const r = await withRing(true, (ring) => recovery(ring, keys, n, valueBytes));
  const scale = 100_000 / keys;
  console.log(`recovery of ${keys} keys (${r.entries} entries recovered) through a real enclave restart:`);
  console.log(`  launch -> 'sealed state recovered' ${r.logMs.toFixed(0)} ms (${(r.logMs * scale).toFixed(0)} ms per 100,000 keys)`);
  console.log(`  kill -9 -> serving all keys       ${r.answerMs.toFixed(0)} ms (${(r.answerMs * scale).toFixed(0)} ms per 100,000 keys, incl. the 500 ms relaunch delay)`);
}
