/** Latency samples of one run, and the figures the benchmark prints. */

export interface RunFigures {
  ops: number;
  errors: number;
  seconds: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /** The slowest operation: a stall (a synchronous snapshot, a GC pause) shows here long before it moves p99. */
  maxMs: number;
}

/** Collects per-operation latencies in microseconds (a growable typed array, no per-sample objects). */
export class Latencies {
  private samples = new Float64Array(1 << 16);
  private n = 0;

  add(us: number): void {
    if (this.n === this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2);
      bigger.set(this.samples);
      this.samples = bigger;
    }
    this.samples[this.n++] = us;
  }

  get count(): number {
    return this.n;
  }

  /** The q-quantile (0..1) in milliseconds, nearest rank. */
  quantiles(qs: number[]): number[] {
    if (this.n === 0) return qs.map(() => NaN);
    const sorted = this.samples.slice(0, this.n).sort();
    return qs.map((q) => (sorted[Math.min(this.n - 1, Math.max(0, Math.ceil(q * this.n) - 1))] as number) / 1000);
  }
}

export function figures(lat: Latencies, errors: number, seconds: number): RunFigures {
  const [p50Ms, p99Ms, maxMs] = lat.quantiles([0.5, 0.99, 1]) as [number, number, number];
  return { ops: lat.count, errors, seconds, opsPerSec: lat.count / seconds, p50Ms, p99Ms, maxMs };
}
