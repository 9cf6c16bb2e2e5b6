// The history of a fault run (test/helpers/jepsen.ts) and its checks: every SDK call recorded as invoke ->
// ok | fail (certainly not applied) | info (outcome unknown), with logical times for the checker and
// monotonic milliseconds for reading a dump; the fault log; then per-key linearizability (the WGL checker of
// test/helpers/linearizability.ts) and the anomalies named on their own (lost acknowledged writes, version
// conflicts, failed writes applied, keys unwritable or unreadable after healing).
import { performance } from 'node:perf_hooks';
import { EkvError, type EkvClient } from '../../client/index.ts';
import { checkHistory, checkKey, type ClientHistOp, type HistEntry, type HistOut } from './linearizability.ts';

// ---------------------------------------------------------------------------------------------------
// Randomness (seeded) and the history.

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Failures after which a write's outcome is unknown (client/index.ts put/delete contract). */
export const unknownOutcomeCodes: ReadonlySet<string> = new Set(['UNAVAILABLE', 'TIMEOUT', 'CLOSED', 'EXPIRED']);

export type Status = 'invoke' | 'ok' | 'fail' | 'info';

export interface Rec {
  client: string;
  key: string;
  op: ClientHistOp;
  /** Logical times (distinct across the history); ret is Infinity while pending or when the outcome is unknown. */
  call: number;
  ret: number;
  /** Milliseconds since the run began (monotonic clock), for reading a dump against the fault log. */
  t0: number;
  t1: number | null;
  status: Status;
  out: HistOut | null;
  error?: string;
  via?: string;
}

export interface FaultEvent {
  t: number;
  at: number;
  what: string;
}

export class Recorder {
  readonly ops: Rec[] = [];
  readonly faults: FaultEvent[] = [];
  private clock = 0;
  private readonly start = performance.now();

  ms(): number {
    return Math.round((performance.now() - this.start) * 10) / 10;
  }

  invoke(client: string, key: string, op: ClientHistOp, via?: string): Rec {
    const r: Rec = { client, key, op, call: ++this.clock, ret: Infinity, t0: this.ms(), t1: null, status: 'invoke', out: null };
    if (via !== undefined) r.via = via;
    this.ops.push(r);
    return r;
  }

  ok(r: Rec, out: HistOut): void {
    r.ret = ++this.clock;
    r.t1 = this.ms();
    r.status = 'ok';
    r.out = out;
  }

  /** Certainly not applied (a refusal). */
  fail(r: Rec, code: string): void {
    r.ret = ++this.clock;
    r.t1 = this.ms();
    r.status = 'fail';
    r.error = code;
  }

  /** Outcome unknown: the op may take effect at any time after its invocation, or never. */
  info(r: Rec, code: string): void {
    r.t1 = this.ms();
    r.status = 'info';
    r.error = code;
  }

  /** A fault (or heal) event, at this point of the history. */
  mark(what: string): void {
    this.faults.push({ t: this.ms(), at: ++this.clock, what });
  }

  /** The history for the checker: ok ops, and info/invoke ops as outcome-unknown; failed ones did not happen. */
  history(): HistEntry[] {
    const out: HistEntry[] = [];
    for (const r of this.ops) {
      if (r.status === 'fail') continue;
      out.push({ key: r.key, op: r.op, call: r.call, ret: r.status === 'ok' ? r.ret : Infinity, out: r.status === 'ok' ? r.out : null, client: r.client });
    }
    return out;
  }
}

/** Record one SDK call: ok with its answer, fail (a refusal) or info (unknown outcome), by the SDK's contract. */
export async function recorded(rec: Recorder, client: string, kv: EkvClient, key: string, op: ClientHistOp, via?: string): Promise<Rec> {
  const r = rec.invoke(client, key, op, via);
  try {
    if (op.kind === 'get') {
      const g = via ? await rawGet(kv, via, key) : await kv.getWithVersion(key).then((x) => ({ value: x.value.toString(), version: x.version }));
      rec.ok(r, g ? { kind: 'get', found: true, value: g.value, version: g.version } : { kind: 'get', found: false, value: null, version: 0 });
    } else if (op.kind === 'put') {
      const version = await kv.put(key, op.value, op.ifVersion === null ? undefined : { ifVersion: op.ifVersion });
      rec.ok(r, op.ifVersion === 0 ? { kind: 'write', version, existed: false } : { kind: 'write', version });
    } else {
      const d = await kv.delete(key, op.ifVersion === null ? undefined : { ifVersion: op.ifVersion });
      // Deleting a key without a value answers version 0 (not the tombstone's): the same as reading "absent".
      if (!d.deleted) {
        r.op = { kind: 'get' };
        rec.ok(r, { kind: 'get', found: false, value: null, version: 0 });
      } else rec.ok(r, { kind: 'write', version: d.version, existed: true });
    }
  } catch (err) {
    const code = err instanceof EkvError ? err.code : ((err as { code?: string }).code ?? 'ERROR');
    if (op.kind === 'get' && code === 'NOT_FOUND') rec.ok(r, { kind: 'get', found: false, value: null, version: 0 });
    else if (code === 'CONFLICT' && op.kind !== 'get' && op.ifVersion !== null && err instanceof EkvError && err.version !== undefined) {
      rec.ok(r, { kind: 'conflict', version: err.version });
    } else if (op.kind === 'get') rec.info(r, code); // a failed read constrains nothing
    else if (err instanceof EkvError && !unknownOutcomeCodes.has(code) && code !== 'CONFLICT') rec.fail(r, code);
    else rec.info(r, code); // includes a CONFLICT that is not a compare-and-set's answer, and non-EkvErrors
  }
  return r;
}

/** A read sent to one node (it forwards to the key's owner): value and version, or null for NOT_FOUND. */
async function rawGet(kv: EkvClient, addr: string, key: string): Promise<{ value: string; version: number } | null> {
  try {
    const r = await kv.node(addr).call('get', { k: Buffer.from(key) });
    if (!(r.v instanceof Uint8Array) || typeof r.n !== 'number') throw new EkvError('PROTOCOL', 'malformed get answer');
    return { value: Buffer.from(r.v).toString(), version: r.n };
  } catch (err) {
    if (err instanceof EkvError && err.code === 'NOT_FOUND') return null;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// The checks.

export interface Anomalies {
  /** Keys whose history is not linearizable. */
  nonLinearizableKeys: number;
  /** Acknowledged writes whose version is above the key's final read. */
  lostWrites: number;
  /** Two different values acknowledged (by a write or a read) at one version of a key. */
  versionConflicts: number;
  /** Reads that returned the value of a write reported as failed (certainly not applied). */
  failedButApplied: number;
  /** Keys no final read answered, through any node: whether writes were lost cannot be checked. */
  finalUnavailable: number;
  /** Keys the checker could not decide (search bound hit). */
  undecided: number;
}

/** Availability after healing (faults gone, every process back). Issue 11 lets availability suffer, so these
 *  fail a run only with `strict` (row 2, whose symptom was a range left broken after its host came back). */
export interface Availability {
  /** Keys that took no write after healing (probeWrites). */
  unwritableAfterHeal: number;
  /** Keys some node never answered a final read for (while another did). */
  finalPartial: number;
}

export interface Verdict {
  ok: boolean;
  anomalies: Anomalies;
  availability: Availability;
  problems: string[];
  counts: { ops: number; ok: number; fail: number; info: number; reads: number; writes: number; checked: number; errors: Record<string, number> };
}

export function check(rec: Recorder, finalMissing: string[], stuck: string[] = [], o: { strict?: boolean; statesMax?: number } = {}): Verdict {
  const problems: string[] = [];
  const hist = rec.history();
  const lin = checkHistory(hist, o.statesMax ?? 2_000_000);
  let undecided = 0;
  for (const f of lin.failures) {
    if (f.exhausted) undecided++;
    problems.push(describe(f.key, f.exhausted === true, f.ops, hist, rec.faults));
  }
  // Lost acknowledged writes: a final read that finds a value must have a version at or above every
  // acknowledged one (the lowest such read counts). A final NOT_FOUND carries no version (a delete's tombstone
  // is not shown to clients): whether it is explained by an acknowledged or unknown delete is the
  // linearizability check's to say.
  const finalVersion = new Map<string, number>();
  for (const r of rec.ops) {
    if (r.client !== 'final' || r.status !== 'ok' || r.out?.kind !== 'get' || !r.out.found) continue;
    finalVersion.set(r.key, Math.min(finalVersion.get(r.key) ?? Infinity, r.out.version));
  }
  let lostWrites = 0;
  for (const r of rec.ops) {
    if (r.status !== 'ok' || r.out?.kind !== 'write') continue;
    const fv = finalVersion.get(r.key);
    if (fv !== undefined && fv < r.out.version) {
      lostWrites++;
      if (lostWrites <= 10) problems.push(`lost acknowledged write: ${r.key} ${r.op.kind === 'put' ? r.op.value : 'del'} v${r.out.version} by ${r.client} at ${r.t1} ms; final read v${fv}`);
    }
  }
  // Version conflicts: per key and version, the values acknowledged (null = a delete's tombstone).
  const atVersion = new Map<string, string | null>();
  const conflicting = new Set<string>();
  for (const r of rec.ops) {
    if (r.status !== 'ok' || !r.out) continue;
    let value: string | null;
    let version: number;
    if (r.out.kind === 'get' && r.out.found) ({ value, version } = { value: r.out.value, version: r.out.version });
    else if (r.out.kind === 'write') ({ value, version } = { value: r.op.kind === 'put' ? r.op.value : null, version: r.out.version });
    else continue;
    const k = `${r.key}\u0000${version}`;
    if (!atVersion.has(k)) atVersion.set(k, value);
    else if (atVersion.get(k) !== value && !conflicting.has(k)) {
      conflicting.add(k);
      if (conflicting.size <= 10) problems.push(`version conflict: ${r.key} v${version} is both ${atVersion.get(k) ?? 'deleted'} and ${value ?? 'deleted'}`);
    }
  }
  // Failed writes that took effect.
  const failedValues = new Map<string, Rec>();
  for (const r of rec.ops) if (r.status === 'fail' && r.op.kind === 'put') failedValues.set(`${r.key}\u0000${r.op.value}`, r);
  let failedButApplied = 0;
  for (const r of rec.ops) {
    if (r.status !== 'ok' || r.out?.kind !== 'get' || !r.out.found) continue;
    const f = failedValues.get(`${r.key}\u0000${r.out.value}`);
    if (f) {
      failedButApplied++;
      if (failedButApplied <= 5) problems.push(`a write reported failed (${f.error}) took effect: ${r.key} ${r.out.value} read by ${r.client} at ${r.t1} ms`);
    }
  }
  for (const m of finalMissing.slice(0, 10)) problems.push(`final read never answered: ${m}`);
  for (const k of stuck) problems.push(`no write acknowledged after healing: ${k}`);
  const missingKeys = new Set(finalMissing.map((m) => m.split(' ')[0] as string));
  const answered = new Set(rec.ops.filter((r) => r.client === 'final' && r.status === 'ok').map((r) => r.key));
  const anomalies: Anomalies = {
    nonLinearizableKeys: lin.failures.length - undecided, lostWrites, versionConflicts: conflicting.size, failedButApplied,
    finalUnavailable: [...missingKeys].filter((k) => !answered.has(k)).length, undecided,
  };
  const availability: Availability = { unwritableAfterHeal: stuck.length, finalPartial: [...missingKeys].filter((k) => answered.has(k)).length };
  const errors: Record<string, number> = {};
  for (const r of rec.ops) if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
  const counts = {
    ops: rec.ops.length,
    ok: rec.ops.filter((r) => r.status === 'ok').length,
    fail: rec.ops.filter((r) => r.status === 'fail').length,
    info: rec.ops.filter((r) => r.status === 'info' || r.status === 'invoke').length,
    reads: rec.ops.filter((r) => r.op.kind === 'get').length,
    writes: rec.ops.filter((r) => r.op.kind !== 'get').length,
    checked: lin.ops,
    errors,
  };
  const ok = Object.values(anomalies).every((n) => n === 0) && (!o.strict || Object.values(availability).every((n) => n === 0));
  return { ok, anomalies, availability, problems, counts };
}

function showOp(h: HistEntry): string {
  const op = h.op.kind === 'get' ? 'get' : h.op.kind === 'expire' ? `expire ${h.op.value}` : h.op.kind === 'put' ? `put ${h.op.value}${h.op.ifVersion !== null ? ` if v${h.op.ifVersion}` : ''}` : `del${h.op.ifVersion !== null ? ` if v${h.op.ifVersion}` : ''}`;
  const out = !h.out ? '?' : h.out.kind === 'get' ? (h.out.found ? `${h.out.value} v${h.out.version}` : 'NOT_FOUND') : h.out.kind === 'write' ? `ok v${h.out.version}` : `CONFLICT v${h.out.version}`;
  return `[${h.call}, ${h.ret === Infinity ? '∞' : h.ret}] ${h.client ?? ''} ${op} -> ${out}`;
}

/** The shortest failing prefix of a key's history (by bisection over its return times), and its last operations. */
function describe(key: string, exhausted: boolean, n: number, history: readonly HistEntry[], faults: readonly FaultEvent[]): string {
  if (exhausted) return `key ${key}: search exhausted (${n} ops), not decided`;
  const ops = history.filter((h) => h.key === key && !(h.op.kind === 'get' && !h.out));
  const cut = (t: number) => ops.filter((h) => h.call <= t).map((h) => (h.ret <= t ? h : { ...h, ret: Infinity, out: null }));
  const times = [...new Set(ops.map((h) => h.ret).filter((t) => Number.isFinite(t)))].sort((a, b) => a - b);
  let lo = 0;
  let hi = times.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (checkKey(key, cut(times[mid] as number)).ok) lo = mid + 1;
    else hi = mid;
  }
  const t = times[lo] as number;
  const last = ops.filter((h) => h.call <= t).slice(-12);
  // The fault events among them, at their place in the history.
  const from = last[0]?.call ?? 0;
  const lines = [
    ...last.map((h) => ({ at: h.call, line: `    ${showOp(h)}` })),
    ...faults.filter((f) => f.at >= from && f.at <= t).map((f) => ({ at: f.at, line: `    -- ${f.at}: ${f.what}` })),
  ].sort((a, b) => a.at - b.at);
  const shown = lines.map((l) => l.line);
  return `key ${key}: not linearizable (${n} ops); the shortest failing prefix ends at ${t}:\n${shown.join('\n')}`;
}

