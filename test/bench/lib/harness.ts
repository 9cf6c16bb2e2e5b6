/**
 * The load generator both systems run under: `clients` closed-loop workers,
 * each with one request outstanding, spread over `connections` connections
 * (so each connection carries clients/connections requests in flight, which
 * is where the SDK's frame batching and RESP pipelining both come in), a
 * fixed key space preloaded with values, and a get/put mix. The same seed
 * gives every system the same sequence of operations.
 */
import { Latencies, figures, type RunFigures } from './stats.ts';

export interface KvConnection {
  get(key: Buffer): Promise<unknown>;
  put(key: Buffer, value: Buffer): Promise<unknown>;
  close(): Promise<void> | void;
}

export interface LoadSettings {
  clients: number;
  connections: number;
  seconds: number;
  /** When set, stop after this many operations instead of after `seconds`. */
  ops: number | null;
  valueBytes: number;
  keys: number;
  warmupSeconds: number;
}

export interface Mix {
  name: string;
  getFraction: number;
}

/** xorshift32: deterministic and cheap, so the generator costs the same on both sides. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

export function keyOf(i: number): Buffer {
  return Buffer.from(`bench:${i.toString().padStart(8, '0')}`);
}

/** Writes every key once (bounded parallelism per connection). */
export async function preload(conns: KvConnection[], s: LoadSettings, value: Buffer): Promise<void> {
  let next = 0;
  const perConn = Math.max(1, Math.ceil(s.clients / conns.length));
  await Promise.all(conns.flatMap((c) => Array.from({ length: perConn }, async () => {
    for (;;) {
      const i = next++;
      if (i >= s.keys) return;
      await c.put(keyOf(i), value);
    }
  })));
}

/** Called when the measured window opens (after the warm-up) and when it closes. */
export interface MeasureWindow {
  start(): void;
  end(): void;
}

export async function runMix(conns: KvConnection[], s: LoadSettings, mix: Mix, seed: number, window?: MeasureWindow): Promise<RunFigures> {
  const value = Buffer.alloc(s.valueBytes, 0x61);
  const lat = new Latencies();
  let errors = 0;
  let issued = 0;
  let recording = false;
  const warmupEnd = Date.now() + s.warmupSeconds * 1000;
  let measureStart = 0n;
  let measureEnd = 0n;
  const deadline = warmupEnd + s.seconds * 1000;
  const done = () => (s.ops !== null ? recording && issued >= s.ops : Date.now() >= deadline);

  const worker = async (w: number) => {
    const conn = conns[w % conns.length] as KvConnection;
    const rand = rng(seed + w * 7919);
    for (;;) {
      if (!recording && Date.now() >= warmupEnd) {
        recording = true;
        window?.start();
        measureStart = process.hrtime.bigint();
      }
      if (done()) return;
      const key = keyOf(Math.floor(rand() * s.keys));
      const isGet = rand() < mix.getFraction;
      const counted = recording;
      if (counted) issued++;
      const t0 = process.hrtime.bigint();
      try {
        await (isGet ? conn.get(key) : conn.put(key, value));
        if (counted) lat.add(Number(process.hrtime.bigint() - t0) / 1000);
      } catch {
        if (counted) errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: s.clients }, (_, w) => worker(w)));
  measureEnd = process.hrtime.bigint();
  window?.end();
  return figures(lat, errors, Number(measureEnd - measureStart) / 1e9);
}
