// `npm run bench:verify`: median time to verify the real non-debug Nitro documents, each at its own
// timestamp, cold (no chain cache) and warm (chain cached), against @evervault/wasm-attestation-bindings
// (Rust, compiled to wasm) on the same documents in the same process. Both sides check the same PCRs.
// The peer reads the time through Date.now(), so it is pinned to each document's timestamp while it runs.
// BENCH_ITERATIONS=<n> sets the measured runs per document (default 30).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { initSync, PCRs, validateAttestationDocPcrs } from '@evervault/wasm-attestation-bindings';
import { ChainCache, verifyAttestation, type VerifyPolicy } from '../../verifier/index.ts';
import { loadFixtures, type NitroFixture } from '../helpers/nitro-fixtures.ts';

const iterations = Number(process.env.BENCH_ITERATIONS ?? 30);
const warmupRuns = 5;

const require = createRequire(import.meta.url);
initSync({ module: readFileSync(require.resolve('@evervault/wasm-attestation-bindings/index_bg.wasm')) });

type Run = () => Promise<void> | void;

async function measure(run: Run): Promise<number[]> {
  for (let i = 0; i < warmupRuns; i++) await run();
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const start = process.hrtime.bigint();
    await run();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function ours(f: NitroFixture, cache: ChainCache | false): Run {
  const policy: VerifyPolicy = { now: f.timestampMs, cache, pcrs: { 0: f.pcr0, 1: f.pcr1, 2: f.pcr2 } };
  return async () => {
    await verifyAttestation(f.bytes, policy);
  };
}

/** The peer, with its clock pinned to the document's time; its PCRs object is consumed by each call. */
function peer(f: NitroFixture): Run {
  const doc = Buffer.from(f.bytes).toString('base64');
  return () => {
    const realNow = Date.now;
    const realError = console.error;
    Date.now = () => f.timestampMs;
    console.error = () => {};
    try {
      const ok = validateAttestationDocPcrs(doc, [new PCRs(f.pcr0, f.pcr1, f.pcr2, undefined, 'SHA384')]);
      if (!ok) throw new Error(`the peer rejected ${f.file}`);
    } finally {
      Date.now = realNow;
      console.error = realError;
    }
  };
}

const docs = loadFixtures().filter((f) => !f.debug);
const all = { cold: [] as number[], warm: [] as number[], peer: [] as number[] };
const fmt = (ms: number): string => ms.toFixed(3).padStart(8);

console.log(`verify: ${docs.length} real non-debug documents, ${iterations} runs each after ${warmupRuns} warm-up runs`);
console.log(`${'document'.padEnd(34)} ${'cold ms'.padStart(8)} ${'warm ms'.padStart(8)} ${'peer ms'.padStart(8)}`);
for (const f of docs) {
  const cold = await measure(ours(f, false));
  const cache = new ChainCache();
  const warm = await measure(ours(f, cache));
  const theirs = await measure(peer(f));
  all.cold.push(...cold);
  all.warm.push(...warm);
  all.peer.push(...theirs);
  console.log(`${f.file.padEnd(34)} ${fmt(median(cold))} ${fmt(median(warm))} ${fmt(median(theirs))}`);
}
const [cold, warm, theirs] = [median(all.cold), median(all.warm), median(all.peer)];
console.log(`${'median over all runs'.padEnd(34)} ${fmt(cold)} ${fmt(warm)} ${fmt(theirs)}`);
console.log(`cold: ${cold.toFixed(3)} ms, peer/ours = ${(theirs / cold).toFixed(2)}x`);
console.log(`warm: ${warm.toFixed(3)} ms, peer/ours = ${(theirs / warm).toFixed(2)}x`);
console.log('(peer: @evervault/wasm-attestation-bindings validateAttestationDocPcrs; it has no cache, so one figure)');
