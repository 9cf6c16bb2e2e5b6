// Sealing speed: put throughput with sealing on vs off, and recovery time per 100,000 keys.
//   npx tsx test/bench/seal.ts [--keys 100000] [--value 100] [--concurrency 64] [--no-fsync]
// `benchSeal` is exported for npm run bench:kv, which should compare against its own unsealed put path.
import { SealedStore } from '../../enclave/seal/log.ts';
import { startSealEnv } from '../helpers/seal-env.ts';
import { helpFromHeader } from './lib/help.ts';

helpFromHeader(import.meta.url);

export interface SealBenchResult {
  keys: number;
  valueBytes: number;
  concurrency: number;
  fsync: boolean;
  /** Appends per second of put records through the sealed log (durable when counted). */
  sealedPutsPerSec: number;
  /** The same records into an in-memory map only (what "sealing off" costs per put, before the network). */
  unsealedPutsPerSec: number;
  /** SealedStore.open over a log of `keys` records, scaled to 100,000. */
  recoveryMsPer100kFromLog: number;
  /** SealedStore.open over a snapshot of `keys` entries, scaled to 100,000. */
  recoveryMsPer100kFromSnapshot: number;
}

function putRecord(i: number, valueBytes: number): Buffer {
  const key = Buffer.from(`key-${i}`);
  const rec = Buffer.alloc(4 + key.length + valueBytes, 0x61);
  rec.writeUInt32BE(key.length, 0);
  key.copy(rec, 4);
  return rec;
}

async function runConcurrent(n: number, concurrency: number, op: (i: number) => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) await op(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return performance.now() - t0;
}

export async function benchSeal(opts: { keys?: number; valueBytes?: number; concurrency?: number; fsync?: boolean } = {}): Promise<SealBenchResult> {
  const keys = opts.keys ?? 100_000;
  const valueBytes = opts.valueBytes ?? 100;
  const concurrency = opts.concurrency ?? 64;
  const fsync = opts.fsync ?? true;
  const env = await startSealEnv({ fsync });
  try {
    const map = new Map<string, Buffer>();
    const unsealedMs = await runConcurrent(keys, concurrency, (i) => map.set(`key-${i}`, putRecord(i, valueBytes)));
    const { store } = await env.open();
    const sealedMs = await runConcurrent(keys, concurrency, (i) => store.append(putRecord(i, valueBytes)));
    await store.close();
    let t0 = performance.now();
    const fromLog = await env.open();
    const logMs = performance.now() - t0;
    if (fromLog.recovered.lastSeq !== keys) throw new Error('recovery lost records');
    await fromLog.store.writeSnapshot(Buffer.concat(fromLog.recovered.records));
    await fromLog.store.close();
    t0 = performance.now();
    const fromSnap = await env.open();
    const snapMs = performance.now() - t0;
    if (fromSnap.recovered.snapshotSeq !== keys) throw new Error('snapshot recovery mismatch');
    await fromSnap.store.close();
    const scale = 100_000 / keys;
    return {
      keys, valueBytes, concurrency, fsync,
      sealedPutsPerSec: Math.round(keys / (sealedMs / 1000)),
      unsealedPutsPerSec: Math.round(keys / (unsealedMs / 1000)),
      recoveryMsPer100kFromLog: Math.round(logMs * scale),
      recoveryMsPer100kFromSnapshot: Math.round(snapMs * scale),
    };
  } finally {
    await env.cleanup();
  }
}

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i === -1 ? fallback : Number(process.argv[i + 1]);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const result = await benchSeal({
    keys: arg('--keys', 100_000),
    valueBytes: arg('--value', 100),
    concurrency: arg('--concurrency', 64),
    fsync: !process.argv.includes('--no-fsync'),
  });
  console.log(JSON.stringify(result, null, 2));
  for (const c of [1, 8]) {
    const r = await benchSeal({ keys: 5000, concurrency: c, fsync: result.fsync });
    console.log(`concurrency ${c}: ${r.sealedPutsPerSec} sealed puts/s`);
  }
}
