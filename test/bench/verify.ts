// `npm run bench:verify`: median time to verify the real non-debug Nitro documents, each at its own
// timestamp, cold (no chain cache) and warm (chain cached), against @evervault/wasm-attestation-bindings
// (Rust, compiled to wasm) on the same documents in the same process. Both sides check the same PCRs.
// The peer reads the time through Date.now(), so it is pinned to each document's timestamp while it runs.
// The floor: the same work with node:crypto alone (parse the five certificates with X509Certificate,
// verify the four certificate signatures and the COSE signature), no decoding, no policy; the cold
// figure's ratio to it is the verifier's own overhead (issue 15's target: at most 1.5x).
// BENCH_ITERATIONS=<n> sets the measured runs per document (default 30); --json prints one JSON object.
import { verify, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { initSync, PCRs, validateAttestationDocPcrs } from '@evervault/wasm-attestation-bindings';
import { ChainCache, decodeAttestationDocument, sigStructure, verifyAttestation, type VerifyPolicy } from '../../verifier/index.ts';
import { chainPathCounts } from '../../verifier/chain.ts';
import { loadFixtures, type NitroFixture } from '../helpers/nitro-fixtures.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

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

/** node:crypto alone: five certificate parses and five P-384 verifications (the four links and the COSE signature). */
function floor(f: NitroFixture): Run {
  const d = decodeAttestationDocument(f.bytes);
  const ders = [...d.cabundle, d.certificate];
  const signed = sigStructure(d.protectedHeader, d.payloadBytes);
  return () => {
    const certs = ders.map((der) => new X509Certificate(der));
    for (let i = 1; i < certs.length; i++) if (!certs[i]!.verify(certs[i - 1]!.publicKey)) throw new Error('floor: a link does not verify');
    const leaf = certs[certs.length - 1]!.publicKey;
    if (!verify('sha384', signed, { key: leaf, dsaEncoding: 'ieee-p1363' }, d.signature)) throw new Error('floor: the COSE signature does not verify');
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
const json = process.argv.includes('--json');
const all = { cold: [] as number[], warm: [] as number[], peer: [] as number[], floor: [] as number[] };
const fmt = (ms: number): string => ms.toFixed(3).padStart(8);

const log = (line: string): void => {
  if (!json) console.log(line);
};
log(`verify: ${docs.length} real non-debug documents, ${iterations} runs each after ${warmupRuns} warm-up runs`);
log(`${'document'.padEnd(34)} ${'cold ms'.padStart(8)} ${'warm ms'.padStart(8)} ${'floor ms'.padStart(8)} ${'peer ms'.padStart(8)}`);
for (const f of docs) {
  // Interleaved per document, so a noisy neighbour slows each figure alike.
  const base = await measure(floor(f));
  const cold = await measure(ours(f, false));
  const cache = new ChainCache();
  const warm = await measure(ours(f, cache));
  const theirs = await measure(peer(f));
  all.cold.push(...cold);
  all.warm.push(...warm);
  all.peer.push(...theirs);
  all.floor.push(...base);
  log(`${f.file.padEnd(34)} ${fmt(median(cold))} ${fmt(median(warm))} ${fmt(median(base))} ${fmt(median(theirs))}`);
}
const [cold, warm, theirs, base] = [median(all.cold), median(all.warm), median(all.peer), median(all.floor)];
log(`${'median over all runs'.padEnd(34)} ${fmt(cold)} ${fmt(warm)} ${fmt(base)} ${fmt(theirs)}`);
log(`floor (node:crypto alone: 5 X509Certificate parses + 5 P-384 verifications): ${base.toFixed(3)} ms`);
log(`cold: ${cold.toFixed(3)} ms = ${(cold / base).toFixed(2)}x the floor (target <= 1.5x); peer/ours = ${(theirs / cold).toFixed(2)}x`);
log(`warm: ${warm.toFixed(3)} ms = ${(warm / base).toFixed(2)}x the floor; peer/ours = ${(theirs / warm).toFixed(2)}x`);
log(`chains decided by the fast path ${chainPathCounts.fast}, by the full pkijs check ${chainPathCounts.full}`);
log('(peer: @evervault/wasm-attestation-bindings validateAttestationDocPcrs; it has no cache, so one figure)');
if (json) {
  console.log(JSON.stringify({
    documents: docs.length, iterations, coldMs: cold, warmMs: warm, floorMs: base, peerMs: theirs,
    coldOverFloor: cold / base, warmOverFloor: warm / base, peerOverCold: theirs / cold, chainPaths: { ...chainPathCounts },
  }));
}
