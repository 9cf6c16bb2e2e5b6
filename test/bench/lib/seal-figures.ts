/**
 * Where a sealed put's time goes, from the enclave's own metrics (docs/observability.md), scraped from the
 * node's host at the start and the end of a measured window (the host serves the enclave's families to a
 * loopback scrape). Uses only families the enclave exports anyway: no instrumentation in the image.
 *
 *   ekv_enclave_request_duration_seconds{op="put"}  a put inside the enclave: request decoded to answer queued
 *   ekv_enclave_seal_fsync_duration_seconds         one append request: sent to the host's blob store to its
 *                                                   answer handled (host write with O_DSYNC, both socket hops,
 *                                                   both event loops)
 *   ekv_enclave_seal_segment_writes_total{result}   append requests answered
 *   ekv_enclave_seal_appends_total                  sealed records (one per driver batch of log records)
 *   ekv_enclave_seal_snapshots_total{result}        snapshots (compaction) written
 */

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition, samples only (comments and blank lines skipped; unparsable lines ignored). */
export function parsePromText(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const lm of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1] as string] = lm[2] as string;
    const value = m[4] === '+Inf' ? Infinity : Number(m[4]);
    if (Number.isNaN(value)) continue;
    out.push({ name: m[1] as string, labels, value });
  }
  return out;
}

/** The sum of every sample of `name` whose labels include `want` (across nodes and other labels). */
function total(samples: readonly PromSample[], name: string, want: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(want).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

export interface SealFigures {
  /** Mean time of a put inside the enclave (ms). */
  putMs: number;
  /** Mean time of one append request to the host's blob store, sent to answered (ms). */
  requestMs: number;
  /** Append requests per operation of the window. */
  requestsPerOp: number;
  /** Sealed records per append request. */
  sealsPerRequest: number;
  /** Puts answered per append request. */
  putsPerRequest: number;
  /** Snapshots written in the window. */
  snapshots: number;
}

/**
 * The window's figures: differences between the scrape at its end and the one at its start, per `ops`
 * operations (every operation the load generator issued in the window). Null when no append was answered.
 */
export function sealFigures(before: readonly PromSample[], after: readonly PromSample[], ops: number): SealFigures | null {
  const d = (name: string, want: Record<string, string> = {}) => total(after, name, want) - total(before, name, want);
  const requests = d('ekv_enclave_seal_segment_writes_total', { result: 'ok' });
  const requestCount = d('ekv_enclave_seal_fsync_duration_seconds_count');
  const puts = d('ekv_enclave_request_duration_seconds_count', { op: 'put' });
  if (requests <= 0 || requestCount <= 0 || puts <= 0) return null;
  return {
    putMs: (d('ekv_enclave_request_duration_seconds_sum', { op: 'put' }) / puts) * 1000,
    requestMs: (d('ekv_enclave_seal_fsync_duration_seconds_sum') / requestCount) * 1000,
    requestsPerOp: requests / Math.max(1, ops),
    sealsPerRequest: d('ekv_enclave_seal_appends_total') / requests,
    putsPerRequest: puts / requests,
    snapshots: d('ekv_enclave_seal_snapshots_total'),
  };
}

export function formatSealFigures(f: SealFigures): string {
  return (
    `put inside the enclave ${f.putMs.toFixed(2)} ms (mean), of which waiting for its append request ~${f.requestMs.toFixed(2)} ms ` +
    `(host write + O_DSYNC + hops); ${f.requestsPerOp.toFixed(3)} append requests/op, ${f.putsPerRequest.toFixed(1)} puts and ` +
    `${f.sealsPerRequest.toFixed(2)} sealed records per request, ${f.snapshots} snapshots`
  );
}

/** The host's /metrics (the enclave's families included for a loopback scrape); null when it cannot be read. */
export async function scrapeMetrics(http: string): Promise<PromSample[] | null> {
  try {
    const res = await fetch(`${http}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) return null;
    return parsePromText(await res.text());
  } catch {
    return null;
  }
}
