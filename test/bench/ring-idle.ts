// What an idle ring costs (issue 15): an N-node ring (R = min(3, N)) of emulated enclaves, settled, with no
// client load; over a window, the CPU of the enclave processes (/proc), the RPCs they answered by operation
// (their `metrics`: Chord's `ring` messages, the data cores' `dm` batches), and the data batches' bytes
// (`status` peerBytesOut, summed over the nodes).
//
//   npx tsx test/bench/ring-idle.ts [--nodes 3] [--seconds 10] [--settle 5] [--seal] [--json]
import { parseArgs } from 'node:util';
import { parseMetricsSnapshot } from '../../protocol/metrics.ts';
import { loadAverage, treeCpuSeconds } from './lib/cpu.ts';
import { RingFixture } from '../helpers/ring-fixture.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

const { values: argv } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '10' },
    settle: { type: 'string', default: '5' },
    seal: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const nodes = Number(argv.nodes);
const windowMs = Number(argv.seconds) * 1000;
const progress = (line: string) => process.stderr.write(`bench:ring-idle: ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Sample { cpu: number; rpcs: Map<string, number>; bytesOut: number; batchesOut: number; messagesOut: number }

async function sample(fx: RingFixture): Promise<Sample> {
  let cpu = 0;
  for (const n of fx.members) cpu += n.enclave?.pid ? (treeCpuSeconds(n.enclave.pid) ?? 0) : 0;
  const rpcs = new Map<string, number>();
  let bytesOut = 0, batchesOut = 0, messagesOut = 0;
  for (const addr of fx.addrs()) {
    const node = (await fx.client(addr)).node(addr);
    const snap = parseMetricsSnapshot((await node.call('metrics', {})).m);
    for (const f of snap.f) {
      if (f.n !== 'ekv_enclave_requests_total') continue;
      for (const s of f.s) {
        const op = `${s[1].op}/${s[1].caller}`;
        rpcs.set(op, (rpcs.get(op) ?? 0) + (s[2] as number));
      }
    }
    const st = await node.call('status', {});
    const num = (x: unknown) => (typeof x === 'number' ? x : 0);
    bytesOut += num(st.peerBytesOut);
    batchesOut += num(st.peerBatchesOut);
    messagesOut += num(st.peerMessagesOut);
  }
  return { cpu, rpcs, bytesOut, batchesOut, messagesOut };
}

async function main(): Promise<void> {
  progress(`starting a ${nodes}-node ring (R=${Math.min(3, nodes)}${argv.seal ? ', sealed' : ''})`);
  const fx = await RingFixture.start({ nodes, replicas: Math.min(3, nodes), seal: argv.seal as boolean });
  try {
    await fx.waitSettled(60_000);
    await sleep(Number(argv.settle) * 1000);
    const a = await sample(fx);
    const t0 = performance.now();
    await sleep(windowMs);
    const b = await sample(fx);
    const s = (performance.now() - t0) / 1000;
    const rpcs: Record<string, number> = {};
    for (const [op, n] of b.rpcs) rpcs[op] = Math.round(((n - (a.rpcs.get(op) ?? 0)) / s) * 10) / 10;
    const out = {
      nodes, seconds: Math.round(s * 10) / 10,
      enclaveCores: Math.round(((b.cpu - a.cpu) / s) * 1000) / 1000,
      rpcsPerSec: rpcs,
      dmBytesPerSec: Math.round((b.bytesOut - a.bytesOut) / s),
      dmBatchesPerSec: Math.round(((b.batchesOut - a.batchesOut) / s) * 10) / 10,
      dmMessagesPerSec: Math.round(((b.messagesOut - a.messagesOut) / s) * 10) / 10,
      load: loadAverage(),
    };
    process.stdout.write((argv.json ? JSON.stringify(out) : JSON.stringify(out, null, 1)) + '\n');
  } finally {
    await fx.stop();
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`bench:ring-idle: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
