// A history of operations on single-key registers, and a checker for the two
// properties the ring promises (issue 4): no acknowledged write is lost, and
// no read returns a value older than the last write acknowledged before the
// read began.
//
// Time is a logical clock: every invoke and every completion takes the next
// tick. The test process is one event loop, so tick order is real-time order
// as the clients saw it ("acknowledged before the read began" = ack tick <
// read invoke tick).
//
// Every written value must be unique per key (the workload writes
// `${key}#${seq}`). A write that failed (timeout, closed connection) has an
// unknown outcome: it may take effect at any time after its invocation, so it
// never makes anything stale, and reading its value is always allowed.
//
// The checks are necessary conditions of linearizability for a register,
// checked per key in O(n log n):
// - phantom: a read returns a value no one wrote;
// - stale: a read returns the value of write w while some write w' acked
//   before the read began was invoked after w was acked (w' is newer);
//   NOT_FOUND counts as the initial value, older than every write;
// - regress: a read returns the value of write w while an earlier read
//   (finished before this one began) returned a write invoked after w was acked;
// - version-conflict: two acknowledgements (put answers or reads) give the
//   same version of a key with different values (the owners' versions must
//   identify writes, or replicas can diverge);
// - version-regress: a read's version is lower than that of a write acked
//   before the read began.

export type Outcome = 'pending' | 'ok' | 'fail';

export interface OpRecord {
  key: string;
  op: 'put' | 'get';
  /** put: the value written; get: the value read (null = NOT_FOUND), once ok. */
  value: string | null;
  version: number | null;
  start: number;
  end: number;
  outcome: Outcome;
  /** Which node the client sent the request to, and why it failed (for reports). */
  via?: string;
  error?: string;
}

export interface Violation {
  kind: 'phantom' | 'stale' | 'regress' | 'version-conflict' | 'version-regress' | 'pending';
  key: string;
  detail: string;
}

const never = Number.POSITIVE_INFINITY;

export class History {
  readonly ops: OpRecord[] = [];
  private clock = 0;

  /** The current logical time (to mark when a fault was injected, for reading reports). */
  now(): number {
    return ++this.clock;
  }

  invoke(key: string, op: 'put' | 'get', value: string | null = null, via?: string): OpRecord {
    const r: OpRecord = { key, op, value: op === 'put' ? value : null, version: null, start: ++this.clock, end: never, outcome: 'pending' };
    if (via !== undefined) r.via = via;
    this.ops.push(r);
    return r;
  }

  /** A put's acknowledgement (its version), or a get's answer (value null = NOT_FOUND, version 0). */
  ok(r: OpRecord, answer: { version: number; value?: string | null }): void {
    r.end = ++this.clock;
    r.outcome = 'ok';
    r.version = answer.version;
    if (r.op === 'get') r.value = answer.value ?? null;
  }

  fail(r: OpRecord, err: unknown): void {
    r.end = ++this.clock;
    r.outcome = 'fail';
    r.error = (err as { code?: string }).code ?? (err as Error).message;
  }

  counts(): { puts: number; putsOk: number; gets: number; getsOk: number; failed: number } {
    let puts = 0, putsOk = 0, gets = 0, getsOk = 0, failed = 0;
    for (const r of this.ops) {
      if (r.op === 'put') puts++;
      else gets++;
      if (r.outcome === 'ok') r.op === 'put' ? putsOk++ : getsOk++;
      if (r.outcome === 'fail') failed++;
    }
    return { puts, putsOk, gets, getsOk, failed };
  }

  /** The last acknowledged value of every key (by ack order). */
  lastAcked(): Map<string, { value: string; version: number }> {
    const out = new Map<string, { value: string; version: number; end: number }>();
    for (const r of this.ops) {
      if (r.op !== 'put' || r.outcome !== 'ok' || r.value === null || r.version === null) continue;
      const prev = out.get(r.key);
      if (!prev || prev.end < r.end) out.set(r.key, { value: r.value, version: r.version, end: r.end });
    }
    return new Map([...out].map(([k, v]) => [k, { value: v.value, version: v.version }]));
  }

  check(): Violation[] {
    const byKey = new Map<string, OpRecord[]>();
    for (const r of this.ops) {
      let list = byKey.get(r.key);
      if (!list) byKey.set(r.key, (list = []));
      list.push(r);
    }
    const out: Violation[] = [];
    for (const [key, ops] of byKey) out.push(...checkKey(key, ops));
    return out;
  }
}

/** When a write's effect is certainly in place: its ack, or never for an unknown outcome. */
function ackedAt(w: OpRecord): number {
  return w.outcome === 'ok' ? w.end : never;
}

function checkKey(key: string, ops: OpRecord[]): Violation[] {
  const out: Violation[] = [];
  const writes = new Map<string, OpRecord>();
  for (const w of ops) if (w.op === 'put' && w.value !== null) writes.set(w.value, w);
  const reads = ops.filter((r) => r.op === 'get' && r.outcome === 'ok');
  for (const r of ops) if (r.outcome === 'pending') out.push({ kind: 'pending', key, detail: `${r.op} invoked at ${r.start} never completed` });

  // The write a read observed: null (NOT_FOUND) is the initial value, acked before everything.
  const initial: OpRecord = { key, op: 'put', value: null, version: 0, start: -1, end: 0, outcome: 'ok' };
  const observed = (r: OpRecord): OpRecord | null => (r.value === null ? initial : (writes.get(r.value) ?? null));

  // Prefix maxima, over completions sorted by time: the latest invoke among acked writes, and
  // among the writes that finished reads observed; the highest version among acked writes.
  const acked = ops.filter((w) => w.op === 'put' && w.outcome === 'ok').sort((a, b) => a.end - b.end);
  const newestWrite = prefixMax(acked.map((w) => ({ at: w.end, v: w.start, w })));
  const topVersion = prefixMax(acked.map((w) => ({ at: w.end, v: w.version ?? 0, w })));
  const readsByEnd = [...reads].sort((a, b) => a.end - b.end);
  const newestSeen = prefixMax(readsByEnd.map((r) => ({ at: r.end, v: observed(r)?.start ?? -1, w: r })));

  for (const r of reads) {
    const w = observed(r);
    if (!w) {
      out.push({ kind: 'phantom', key, detail: `read at ${r.start} via ${r.via ?? '?'} returned ${r.value}, which was never written` });
      continue;
    }
    const newer = newestWrite(r.start);
    if (newer && newer.v > ackedAt(w)) {
      out.push({
        kind: 'stale', key,
        detail: `read [${r.start},${r.end}] via ${r.via ?? '?'} returned ${r.value ?? 'NOT_FOUND'} (v${r.version}) but ${newer.w.value} (v${newer.w.version}) was acked at ${newer.w.end}`,
      });
    }
    const seen = newestSeen(r.start);
    if (seen && seen.v > ackedAt(w)) {
      out.push({
        kind: 'regress', key,
        detail: `read [${r.start},${r.end}] via ${r.via ?? '?'} returned ${r.value ?? 'NOT_FOUND'} after read [${seen.w.start},${seen.w.end}] returned ${seen.w.value}`,
      });
    }
    const top = topVersion(r.start);
    if (top && (r.version ?? 0) < top.v) {
      out.push({ kind: 'version-regress', key, detail: `read at ${r.start} got v${r.version} after v${top.v} was acked` });
    }
  }
  out.push(...versionConflicts(key, ops));
  return out;
}

function versionConflicts(key: string, ops: OpRecord[]): Violation[] {
  const valueOf = new Map<number, string | null>();
  const out: Violation[] = [];
  for (const r of ops) {
    if (r.outcome !== 'ok' || r.version === null || r.version === 0) continue;
    const prev = valueOf.get(r.version);
    if (prev === undefined) valueOf.set(r.version, r.value);
    else if (prev !== r.value) out.push({ kind: 'version-conflict', key, detail: `v${r.version} is both ${prev} and ${r.value}` });
  }
  return out;
}

/** Given points sorted by `at`, a function: t -> the point with the largest v among those with at < t. */
function prefixMax<T>(points: Array<{ at: number; v: number; w: T }>): (t: number) => { v: number; w: T } | null {
  const best: Array<{ v: number; w: T }> = [];
  for (const p of points) {
    const prev = best[best.length - 1];
    best.push(prev && prev.v >= p.v ? prev : { v: p.v, w: p.w });
  }
  return (t) => {
    // The number of points with at < t, by binary search.
    let lo = 0, hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((points[mid] as { at: number }).at < t) lo = mid + 1;
      else hi = mid;
    }
    return lo === 0 ? null : (best[lo - 1] as { v: number; w: T });
  };
}
