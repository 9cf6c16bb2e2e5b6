/**
 * Summaries of V8 .cpuprofile files (node --cpu-prof, or node:inspector's Profiler): self time per function
 * and per source file, as microseconds per benchmark operation. '(idle)' is left out of every total (it is
 * waiting, not cost); '(garbage collector)' and '(program)' (native work outside JavaScript: syscalls,
 * OpenSSL called synchronously) stay in.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface CostLine {
  name: string;
  selfMs: number;
  share: number;
  usPerOp: number;
}

export interface ProfileSummary {
  label: string;
  /** Non-idle sampled time, ms. */
  busyMs: number;
  usPerOp: number;
  functions: CostLine[];
  files: CostLine[];
}

function shortUrl(url: string): string {
  if (url === '') return '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1] as string;
  if (url.startsWith('node:')) return url;
  const parts = url.replace(/^file:\/\//, '').split('/');
  return parts.slice(-2).join('/');
}

/** Self time per node id, from samples and timeDeltas (each delta charged to its sample). */
function selfTimes(p: CpuProfile): Map<number, number> {
  const out = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const id = samples[i] as number;
    const d = Math.max(0, deltas[i + 1] ?? 0); // the delta after a sample is the time it stood for
    out.set(id, (out.get(id) ?? 0) + d);
  }
  return out;
}

export function summarizeProfile(p: CpuProfile, label: string, ops: number, top = 5): ProfileSummary {
  const self = selfTimes(p);
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  let busyUs = 0;
  for (const n of p.nodes) {
    const us = self.get(n.id) ?? 0;
    if (us === 0) continue;
    const fn = n.callFrame.functionName || '(anonymous)';
    if (fn === '(idle)') continue;
    busyUs += us;
    const file = fn.startsWith('(') ? fn : shortUrl(n.callFrame.url);
    const key = fn.startsWith('(') ? fn : `${fn} ${basename(n.callFrame.url) || '(native)'}:${n.callFrame.lineNumber + 1}`;
    byFn.set(key, (byFn.get(key) ?? 0) + us);
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  const lines = (m: Map<string, number>): CostLine[] =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({
      name, selfMs: us / 1000, share: busyUs > 0 ? us / busyUs : 0, usPerOp: ops > 0 ? us / ops : NaN,
    }));
  return { label, busyMs: busyUs / 1000, usPerOp: ops > 0 ? busyUs / ops : NaN, functions: lines(byFn), files: lines(byFile) };
}

export function readProfile(path: string): CpuProfile {
  return JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
}

export function formatSummary(s: ProfileSummary): string {
  const out = [`${s.label}: ${s.busyMs.toFixed(0)} ms busy, ${s.usPerOp.toFixed(1)} us/op`];
  out.push('  top functions (self):');
  for (const l of s.functions) out.push(`    ${l.usPerOp.toFixed(2).padStart(8)} us/op ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
  out.push('  top sources (self):');
  for (const l of s.files) out.push(`    ${l.usPerOp.toFixed(2).padStart(8)} us/op ${(l.share * 100).toFixed(1).padStart(5)}%  ${l.name}`);
  return out.join('\n');
}

/**
 * The part of a profile sampled within the windows [fromUs, toUs] (V8's profile clock: monotonic microseconds, the same
 * clock as `process.hrtime.bigint() / 1000n` in any process on the machine), so that a child's whole-life
 * profile (--cpu-prof) can be cut to a benchmark's measured window.
 */
export function windowProfile(p: CpuProfile, windows: ReadonlyArray<readonly [number, number]>): CpuProfile {
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  const kept: number[] = [];
  const keptDeltas: number[] = [0];
  let t = p.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (!windows.some(([from, to]) => t >= from && t <= to)) continue;
    kept.push(samples[i] as number);
    keptDeltas.push(deltas[i + 1] ?? 0); // the time this sample stood for (selfTimes reads deltas[i + 1])
  }
  return { nodes: p.nodes, samples: kept, timeDeltas: keptDeltas, startTime: p.startTime, endTime: p.endTime };
}
