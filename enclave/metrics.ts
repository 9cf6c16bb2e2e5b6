/**
 * The enclave's metrics: a small registry of counters, gauges and histograms (no prom-client: the image
 * stays lean and nothing in it depends on a metrics library). Nothing here may name a key, a value or a
 * principal: every label value comes from a closed set (an operation name, an error code, a caller kind),
 * and a family refuses new label combinations beyond `seriesPerFamilyMax` (folded into `other`).
 *
 * The snapshot is what leaves the enclave, two ways (docs/observability.md): the host's 'metrics' hello
 * (unauthenticated, for its Prometheus /metrics) and the 'metrics' RPC over an attested session (the
 * dashboard). Its wire shape:
 *
 *   { v: 1, at: ms, f: [ { n: name, t: 'counter'|'gauge'|'histogram', h: help, s: [[suffix, {label: value}, number]] } ] }
 *
 * A histogram's samples are Prometheus's: `_bucket` (with `le`, cumulative), `_sum` and `_count`.
 */

import { X509Certificate } from 'node:crypto';
import { decodeAttestationDocument } from '../verifier/index.ts';
import { enclaveMetricNameRe, type MetricFamily, type MetricLabels, type MetricSample, type MetricType, type MetricsSnapshot } from '../protocol/metrics.ts';

export type Labels = MetricLabels;
type Sample = MetricSample;

export interface Counter {
  inc(labels?: Labels, by?: number): void;
}
export interface Gauge {
  set(value: number, labels?: Labels): void;
}
export interface Histogram {
  observe(value: number, labels?: Labels): void;
}

/** The interface the rest of the enclave (and the data layer) instruments against. */
export interface MetricsRegistry {
  counter(name: string, help: string, labelNames?: readonly string[]): Counter;
  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge;
  histogram(name: string, help: string, labelNames?: readonly string[], buckets?: readonly number[]): Histogram;
  /** A gauge read at snapshot time; `read` returns the value, or a list of [labels, value], or null (absent). */
  gaugeFn(name: string, help: string, read: () => number | Array<[Labels, number]> | null): void;
  /** A counter read at snapshot time (for totals another module already keeps). */
  counterFn(name: string, help: string, read: () => number | null): void;
  snapshot(now?: number): MetricsSnapshot;
  /** Every registered family, with or without samples (for checking dashboards and alert rules). */
  families(): Array<{ name: string; type: MetricType }>;
}

export const seriesPerFamilyMax = 256;
export const familiesMax = 128;
/** Seconds: 0.5 ms .. 10 s. */
export const latencyBuckets: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const labelNameRe = /^[a-z_][a-z0-9_]{0,31}$/;
const labelValueRe = /^[A-Za-z0-9_.+-]{1,40}$/;

interface Family {
  name: string;
  type: MetricType;
  help: string;
  labelNames: readonly string[];
  collect(): Sample[];
}

function seriesKey(labelNames: readonly string[], labels: Labels | undefined): [string, Labels] {
  const out: Labels = {};
  for (const l of labelNames) {
    const v = labels?.[l];
    // A value outside the closed vocabulary (it should never happen) is folded, never exported as given.
    out[l] = typeof v === 'string' && labelValueRe.test(v) ? v : 'other';
  }
  return [labelNames.map((l) => out[l]).join('\u0000'), out];
}

/** Folds a new series into 'other' once a family holds seriesPerFamilyMax. */
function slot<T>(map: Map<string, { labels: Labels; v: T }>, labelNames: readonly string[], labels: Labels | undefined, init: () => T): { labels: Labels; v: T } {
  let [key, ls] = seriesKey(labelNames, labels);
  let s = map.get(key);
  if (s) return s;
  if (map.size >= seriesPerFamilyMax) {
    [key, ls] = seriesKey(labelNames, Object.fromEntries(labelNames.map((l) => [l, 'other'])));
    s = map.get(key);
    if (s) return s;
  }
  s = { labels: ls, v: init() };
  map.set(key, s);
  return s;
}

export function createMetricsRegistry(): MetricsRegistry {
  const families = new Map<string, Family>();
  const add = (f: Family) => {
    if (!enclaveMetricNameRe.test(f.name)) throw new Error(`metric name ${f.name} must match ${enclaveMetricNameRe}`);
    for (const l of f.labelNames) if (!labelNameRe.test(l) || l === 'le' || l === 'node') throw new Error(`bad label name ${l}`);
    const have = families.get(f.name);
    if (have) throw new Error(`metric ${f.name} registered twice`);
    if (families.size >= familiesMax) throw new Error('too many metric families');
    families.set(f.name, f);
  };
  return {
    counter(name, help, labelNames = []) {
      const series = new Map<string, { labels: Labels; v: number }>();
      add({ name, type: 'counter', help, labelNames, collect: () => [...series.values()].map((s) => ['', s.labels, s.v]) });
      return {
        inc(labels, by = 1) {
          if (!(by >= 0)) return;
          slot(series, labelNames, labels, () => 0).v += by;
        },
      };
    },
    gauge(name, help, labelNames = []) {
      const series = new Map<string, { labels: Labels; v: number }>();
      add({ name, type: 'gauge', help, labelNames, collect: () => [...series.values()].map((s) => ['', s.labels, s.v]) });
      return {
        set(value, labels) {
          if (!Number.isFinite(value)) return;
          slot(series, labelNames, labels, () => 0).v = value;
        },
      };
    },
    histogram(name, help, labelNames = [], buckets = latencyBuckets) {
      const bounds = [...buckets].sort((a, b) => a - b);
      const series = new Map<string, { labels: Labels; v: { counts: number[]; sum: number; count: number } }>();
      add({
        name, type: 'histogram', help, labelNames,
        collect: () => {
          const out: Sample[] = [];
          for (const s of series.values()) {
            let cum = 0;
            bounds.forEach((b, i) => {
              cum += s.v.counts[i] as number;
              out.push(['_bucket', { ...s.labels, le: String(b) }, cum]);
            });
            out.push(['_bucket', { ...s.labels, le: '+Inf' }, s.v.count]);
            out.push(['_sum', s.labels, s.v.sum]);
            out.push(['_count', s.labels, s.v.count]);
          }
          return out;
        },
      });
      return {
        observe(value, labels) {
          if (!Number.isFinite(value) || value < 0) return;
          const s = slot(series, labelNames, labels, () => ({ counts: bounds.map(() => 0), sum: 0, count: 0 })).v;
          const i = bounds.findIndex((b) => value <= b);
          if (i >= 0) s.counts[i] = (s.counts[i] as number) + 1;
          s.sum += value;
          s.count++;
        },
      };
    },
    gaugeFn(name, help, read) {
      add({
        name, type: 'gauge', help, labelNames: [],
        collect: () => {
          const v = safeRead(read);
          if (v === null) return [];
          if (typeof v === 'number') return Number.isFinite(v) ? [['', {}, v]] : [];
          return v.slice(0, seriesPerFamilyMax).filter(([, x]) => Number.isFinite(x)).map(([l, x]) => ['', seriesKey(Object.keys(l), l)[1], x]);
        },
      });
    },
    counterFn(name, help, read) {
      add({
        name, type: 'counter', help, labelNames: [],
        collect: () => {
          const v = safeRead(read);
          return typeof v === 'number' && Number.isFinite(v) ? [['', {}, v]] : [];
        },
      });
    },
    families() {
      return [...families.values()].map((f) => ({ name: f.name, type: f.type }));
    },
    snapshot(now = Date.now()) {
      const f: MetricFamily[] = [];
      for (const fam of families.values()) {
        const s = fam.collect();
        if (s.length > 0) f.push({ n: fam.name, t: fam.type, h: fam.help, s });
      }
      return { v: 1, at: now, f };
    },
  };
}

function safeRead<T>(read: () => T): T | null {
  try {
    return read();
  } catch {
    return null;
  }
}

/**
 * The enclave's registry (one enclave per process). Modules that outlive any one data layer (the server's
 * dispatch, the sealed log, the KMS client, the NSM) record here; enclave.ts adds the gauges it reads.
 */
export const enclaveMetrics: MetricsRegistry = createMetricsRegistry();

/** Families recorded outside enclave.ts, registered once at load. */
export const m = {
  requests: enclaveMetrics.counter('ekv_enclave_requests_total', 'RPC requests answered, by operation, caller kind and result code', ['op', 'caller', 'code']),
  requestSeconds: enclaveMetrics.histogram('ekv_enclave_request_duration_seconds', 'RPC request latency inside the enclave, by operation', ['op']),
  handshakes: enclaveMetrics.counter('ekv_enclave_handshakes_total', 'Inbound handshakes, by claimed mode and result', ['mode', 'result']),
  sessionsTampered: enclaveMetrics.counter('ekv_enclave_sessions_tampered_total', 'Sessions ended by a tampered, malformed or oversized frame'),
  sessionsSlowReader: enclaveMetrics.counter('ekv_enclave_sessions_slow_reader_total', 'Client sessions closed because the node-wide answer memory was full and they held the most unread answers, or too many sessions were held and they were held longest'),
  sessionsHoldRefused: enclaveMetrics.counter('ekv_enclave_sessions_hold_refused_total', 'Client sessions closed busy because they would have been held while the node held heldSessionsMax sessions that all made progress lately'),
  sealAppends: enclaveMetrics.counter('ekv_enclave_seal_appends_total', 'Records appended to the sealed log'),
  sealWrites: enclaveMetrics.counter('ekv_enclave_seal_segment_writes_total', 'Sealed-log segment writes to the host, by result', ['result']),
  sealWriteSeconds: enclaveMetrics.histogram('ekv_enclave_seal_fsync_duration_seconds', 'Time for a sealed segment to be durable on the host (write + fsync through the blob store)'),
  sealErrors: enclaveMetrics.counter('ekv_enclave_seal_errors_total', 'Sealed-log failures (segment or snapshot write failed)', ['kind']),
  sealSnapshots: enclaveMetrics.counter('ekv_enclave_seal_snapshots_total', 'Sealed snapshots written, by result', ['result']),
  kmsCalls: enclaveMetrics.counter('ekv_enclave_kms_calls_total', 'KMS calls, by operation and result', ['op', 'result']),
  kmsSeconds: enclaveMetrics.histogram('ekv_enclave_kms_duration_seconds', 'KMS call latency', ['op']),
  attestations: enclaveMetrics.counter('ekv_enclave_attestations_total', 'Attestation documents requested from the NSM, by result', ['result']),
  attestationLast: enclaveMetrics.gauge('ekv_enclave_attestation_last_timestamp_seconds', 'When the NSM last issued a document (enclave clock)'),
  attestationNotAfter: enclaveMetrics.gauge('ekv_enclave_attestation_chain_not_after_timestamp_seconds', 'When the certificate chain of the NSM\'s latest document expires (earliest notAfter of leaf and bundle)'),
  // The data layer's families (epoch, lease, ranges, backlog, retries, expiry) are read from the data store at
  // snapshot time: enclave/node-metrics.ts.
} as const;

/** Reading a document's chain expiry costs a decode and a few certificate parses: at most this often. */
export const chainExpiryEveryMs = 10_000;
let chainExpiryAt = -Infinity;

/** The earliest notAfter (seconds) of the document's leaf and CA bundle; null if it cannot be read. */
export function chainNotAfterSeconds(doc: Uint8Array): number | null {
  try {
    const d = decodeAttestationDocument(doc);
    const times = [d.certificate, ...d.cabundle].map((der) => Date.parse(new X509Certificate(der).validTo));
    const min = Math.min(...times);
    return Number.isFinite(min) ? min / 1000 : null;
  } catch {
    return null;
  }
}

/** Wraps an NSM attest call: counts it and records when the last document was issued and when its chain expires. */
export function countAttestation(p: Promise<Uint8Array>): Promise<Uint8Array> {
  return p.then(
    (doc) => {
      m.attestations.inc({ result: 'ok' });
      const now = Date.now();
      m.attestationLast.set(now / 1000);
      if (now - chainExpiryAt >= chainExpiryEveryMs) {
        chainExpiryAt = now;
        const notAfter = chainNotAfterSeconds(doc);
        if (notAfter !== null) m.attestationNotAfter.set(notAfter);
      }
      return doc;
    },
    (err: unknown) => {
      m.attestations.inc({ result: 'error' });
      throw err;
    },
  );
}
