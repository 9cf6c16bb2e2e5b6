// Checks one simulated run: per-key linearizability of the whole history
// (final reads included), and, stated on its own for clearer reports, that no
// acknowledged write is lost: the final read of each key has a version at least
// that of every write acknowledged on it.
import { checkHistory, checkKey, type HistEntry, type KeyVerdict } from '../helpers/linearizability.ts';
import type { SimResult } from './sim.ts';

export interface RunVerdict {
  ok: boolean;
  problems: string[];
  ops: number;
  acked: number;
  unknown: number;
}

export function checkRun(r: SimResult): RunVerdict {
  const problems: string[] = [];
  const lin = checkHistory(r.history);
  for (const f of lin.failures) problems.push(describe(f, r.history));
  const finals = new Map<string, HistEntry>();
  for (const h of r.history) if (h.client === 'final') finals.set(h.key, h);
  for (const h of r.history) {
    if (h.op.kind === 'get' || h.op.kind === 'expire' || !h.out || h.out.kind !== 'write') continue;
    const f = finals.get(h.key);
    const fv = f?.out?.kind === 'get' ? (f.out.found ? f.out.version : -1) : null;
    if (fv !== null && fv !== -1 && fv < h.out.version) problems.push(`lost acknowledged write: ${h.key} v${h.out.version} by ${h.client}, final read v${fv}`);
  }
  for (const k of r.finalMissing) problems.push(`unavailable at the end: final read of ${k} never answered`);
  const writes = r.history.filter((h) => h.op.kind !== 'get' && h.op.kind !== 'expire');
  return {
    ok: problems.length === 0,
    problems,
    ops: r.history.filter((h) => h.out).length,
    acked: writes.filter((h) => h.out).length,
    unknown: writes.filter((h) => !h.out).length,
  };
}

/** The history cut at time t: operations called by then, those still open at t with an unknown outcome. */
function cut(ops: readonly HistEntry[], t: number): HistEntry[] {
  return ops.filter((h) => h.call <= t).map((h) => (h.ret <= t ? h : { ...h, ret: Infinity, out: null }));
}

/** Reports the shortest failing prefix of the key's history, and the operations around its end. */
function describe(v: KeyVerdict, history: readonly HistEntry[]): string {
  if (v.exhausted) return `key ${v.key}: search exhausted (${v.ops} ops), not checked`;
  const ops = history.filter((h) => h.key === v.key && !(h.op.kind === 'get' && !h.out));
  const times = [...new Set(ops.flatMap((h) => [h.call, h.ret]).filter((t) => Number.isFinite(t)))].sort((a, b) => a - b);
  let lo = 0;
  let hi = times.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (checkKey(v.key, cut(ops, times[mid] as number)).ok) lo = mid + 1;
    else hi = mid;
  }
  const t = times[lo] as number;
  const shown = ops.filter((h) => h.call <= t && (h.ret >= t - 60 || h.call >= t - 60 || !Number.isFinite(h.ret)));
  const lines = shown.slice(-25).map((h) => {
    const op = h.op.kind === 'get' ? 'get' : h.op.kind === 'expire' ? `expire ${h.op.value}` : h.op.kind === 'put' ? `put ${h.op.value}${h.op.ifVersion !== null ? ` if v${h.op.ifVersion}` : ''}${h.op.ttl ? ` ttl ${h.op.ttl}` : ''}` : `del${h.op.ifVersion !== null ? ` if v${h.op.ifVersion}` : ''}`;
    const out = !h.out ? '?' : h.out.kind === 'get' ? (h.out.found ? `${h.out.value} v${h.out.version}` : 'NOT_FOUND') : h.out.kind === 'write' ? `ok v${h.out.version}${h.out.existed ? ' existed' : ''}` : `CONFLICT v${h.out.version}`;
    return `    [${h.call}, ${h.ret === Infinity ? '∞' : h.ret}] ${h.client ?? ''} ${op} -> ${out}`;
  });
  return `key ${v.key}: not linearizable (${v.ops} ops); the shortest failing prefix ends at ${t}:\n${lines.join('\n')}`;
}
