/**
 * The enclave's metrics snapshot on the wire (enclave/metrics.ts makes it): its shape, the strict check of
 * one received (the host gets it over an unauthenticated hello; anything on that socket could answer), and
 * its rendering in the Prometheus text format with extra labels (the host adds `node`).
 *
 *   { v: 1, at: ms, f: [ { n: name, t: 'counter'|'gauge'|'histogram', h: help, s: [[suffix, {label: value}, number]] } ] }
 */
import { EkvError } from './errors.ts';

export type MetricLabels = Record<string, string>;
export type MetricType = 'counter' | 'gauge' | 'histogram';
export type MetricSample = [suffix: string, labels: MetricLabels, value: number];
export interface MetricFamily {
  n: string;
  t: MetricType;
  h: string;
  s: MetricSample[];
}
export interface MetricsSnapshot {
  v: 1;
  at: number;
  f: MetricFamily[];
}

/** A snapshot's bytes (the host's read limit for the 'metrics' hello's answer). */
export const metricsBytesMax = 512 * 1024;
export const metricFamiliesMax = 128;
export const metricSamplesMax = 8192;
export const metricLabelsMax = 8;
export const enclaveMetricNameRe = /^ekv_enclave_[a-z0-9_]{1,80}$/;
const suffixes = new Set(['', '_bucket', '_sum', '_count']);
const labelNameRe = /^[a-z_][a-z0-9_]{0,31}$/;
const labelValueRe = /^[A-Za-z0-9_.+-]{1,40}$/;
const helpRe = /^[\x20-\x7e]{0,200}$/;

function bad(msg: string): never {
  throw new EkvError('PROTOCOL', `metrics snapshot: ${msg}`);
}

const own = (o: Record<string, unknown>, k: string) => (Object.hasOwn(o, k) ? o[k] : undefined);

/** Checks a decoded snapshot field by field (bounded, closed vocabularies); PROTOCOL otherwise. */
export function parseMetricsSnapshot(x: unknown): MetricsSnapshot {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) bad('not a map');
  const o = x as Record<string, unknown>;
  if (own(o, 'v') !== 1) bad('unknown version');
  const at = own(o, 'at');
  if (typeof at !== 'number' || !Number.isFinite(at)) bad('no time');
  const f = own(o, 'f');
  if (!Array.isArray(f) || f.length > metricFamiliesMax) bad('families missing or too many');
  let samples = 0;
  const names = new Set<string>();
  const families = f.map((fam): MetricFamily => {
    if (typeof fam !== 'object' || fam === null || Array.isArray(fam)) bad('family not a map');
    const r = fam as Record<string, unknown>;
    const n = own(r, 'n');
    const t = own(r, 't');
    const h = own(r, 'h');
    const s = own(r, 's');
    if (typeof n !== 'string' || !enclaveMetricNameRe.test(n) || names.has(n)) bad('bad or repeated family name');
    names.add(n);
    if (t !== 'counter' && t !== 'gauge' && t !== 'histogram') bad(`${n}: bad type`);
    if (typeof h !== 'string' || !helpRe.test(h)) bad(`${n}: bad help`);
    if (!Array.isArray(s)) bad(`${n}: no samples`);
    samples += s.length;
    if (samples > metricSamplesMax) bad('too many samples');
    const ss = s.map((smp): MetricSample => {
      if (!Array.isArray(smp) || smp.length !== 3) bad(`${n}: bad sample`);
      const [suffix, labels, value] = smp as unknown[];
      if (typeof suffix !== 'string' || !suffixes.has(suffix) || (suffix !== '' && t !== 'histogram')) bad(`${n}: bad suffix`);
      if (typeof value !== 'number' || Number.isNaN(value)) bad(`${n}: bad value`);
      if (typeof labels !== 'object' || labels === null || Array.isArray(labels)) bad(`${n}: bad labels`);
      const entries = Object.entries(labels as Record<string, unknown>);
      if (entries.length > metricLabelsMax) bad(`${n}: too many labels`);
      const ls: MetricLabels = {};
      for (const [k, v] of entries) {
        if (!labelNameRe.test(k) || k === 'node' || typeof v !== 'string' || !labelValueRe.test(v)) bad(`${n}: bad label`);
        ls[k] = v;
      }
      return [suffix, ls, value];
    });
    return { n, t, h, s: ss };
  });
  return { v: 1, at, f: families };
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function fmt(v: number): string {
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** The snapshot in the Prometheus text exposition format, each sample with `extra` labels added first. */
export function renderPrometheus(s: MetricsSnapshot, extra: MetricLabels): string {
  const lines: string[] = [];
  for (const f of s.f) {
    lines.push(`# HELP ${f.n} ${f.h.replace(/\\/g, '\\\\')}`, `# TYPE ${f.n} ${f.t}`);
    for (const [suffix, labels, value] of f.s) {
      const all = { ...extra, ...labels };
      const ls = Object.entries(all).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',');
      lines.push(`${f.n}${suffix}${ls ? `{${ls}}` : ''} ${fmt(value)}`);
    }
  }
  return lines.join('\n') + (lines.length ? '\n' : '');
}
