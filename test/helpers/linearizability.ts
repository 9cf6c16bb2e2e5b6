// A linearizability checker for per-key histories of a versioned register with
// compare-and-set (get, put, delete, put/delete ifVersion), in the manner of
// Wing & Gong / Lowe, as Porcupine implements it: depth-first search over the
// order in which operations take effect, with memoization of (operations
// already taken, model state). Keys are independent, so each key is checked on
// its own (the "per key").
//
// An operation whose outcome is unknown (a timeout, UNAVAILABLE, a session
// expired) may take effect at any time after its invocation, or never: it is
// given an infinite return time and no constraint on its output.
//
// The model: the key is absent (version 0) at first; every put and every delete
// of a present key increments the version; a delete of an absent key changes
// nothing; ifVersion 0 means "only if absent", N > 0 "only if the live version
// is N"; a CONFLICT answer carries the live version (0 if absent) and changes
// nothing; a get returns the value and version, or not found.
//
// Expiry (docs/consistency.md "Expiry"): a put with a ttl brings an `expire`
// operation of its value, called no earlier than the put's invocation plus its
// ttl (never early) with no return (it may happen at any time after, or never:
// a late expiry constrains nothing here). It takes effect only while its value
// is the key's current one, as a delete would (the version grows by one); it is
// optional, so the search never takes it as a no-op. A resurrected value (read
// absent after its expiry, then read again) is therefore not linearizable.

/** What a client does. */
export type ClientHistOp =
  | { kind: 'get' }
  | { kind: 'put'; value: string; ifVersion: number | null; ttl?: number }
  | { kind: 'del'; ifVersion: number | null };

export type HistOp =
  | ClientHistOp
  /** The system's own: the value of a put with a ttl expires (values are unique per history). */
  | { kind: 'expire'; value: string };

export type HistOut =
  | { kind: 'get'; found: boolean; value: string | null; version: number }
  /** existed: whether the key had a value before; absent when the client is not told (the SDK's put). */
  | { kind: 'write'; version: number; existed?: boolean }
  /** t: for a CONFLICT on a key without a value, the version of its delete (0: never written), when the answer says. */
  | { kind: 'conflict'; version: number; t?: number };

export interface HistEntry {
  key: string;
  op: HistOp;
  /** Logical times: every call and return in the history has a distinct one; ret = Infinity if unknown. */
  call: number;
  ret: number;
  /** null: outcome unknown (the op may or may not have taken effect). */
  out: HistOut | null;
  /** Who did it, for reports. */
  client?: string;
}

interface State { exists: boolean; value: string | null; version: number }

const initial: State = { exists: false, value: null, version: 0 };

/** The next state, or null if the observed output is impossible from `s`. */
export function stepModel(s: State, op: HistOp, out: HistOut | null): State | null {
  const live = s.exists ? s.version : 0;
  if (op.kind === 'expire') {
    if (out || !s.exists || s.value !== op.value) return null; // only as an effect: skipping it is "never"
    return { exists: false, value: null, version: s.version + 1 };
  }
  if (op.kind === 'get') {
    if (!out) return s;
    if (out.kind !== 'get') return null;
    if (out.found !== s.exists) return null;
    if (out.found && (out.value !== s.value || out.version !== s.version)) return null;
    return s;
  }
  const holds = op.ifVersion === null || op.ifVersion === live;
  if (!holds) {
    if (out && (out.kind !== 'conflict' || out.version !== live)) return null;
    // A CONFLICT on a key without a value names its delete's version (review-3 R6): the model's version then.
    if (out && out.kind === 'conflict' && out.t !== undefined && (s.exists || out.t !== s.version)) return null;
    return s;
  }
  let next: State;
  let answer: HistOut;
  if (op.kind === 'put') {
    next = { exists: true, value: op.value, version: s.version + 1 };
    answer = { kind: 'write', version: s.version + 1, existed: s.exists };
  } else if (s.exists) {
    next = { exists: false, value: null, version: s.version + 1 };
    answer = { kind: 'write', version: s.version + 1, existed: true };
  } else {
    next = s;
    answer = { kind: 'write', version: s.version, existed: false };
  }
  if (out && (out.kind !== 'write' || out.version !== answer.version || (out.existed !== undefined && out.existed !== (answer as { existed: boolean }).existed))) return null;
  return next;
}

interface Node {
  op: number; // index into ops
  isCall: boolean;
  time: number;
  match: Node | null; // call -> its return
  prev: Node | null;
  next: Node | null;
}

export interface KeyVerdict {
  key: string;
  ok: boolean;
  ops: number;
  /** Set when the search gave up (too many states): neither proven nor refuted. */
  exhausted?: boolean;
}

/** Checks one key's history. `statesMax` bounds the memo table; past it the verdict is "exhausted". */
export function checkKey(key: string, ops: readonly HistEntry[], statesMax = 2_000_000): KeyVerdict {
  const n = ops.length;
  const events: Node[] = [];
  ops.forEach((o, i) => {
    const call: Node = { op: i, isCall: true, time: o.call, match: null, prev: null, next: null };
    const ret: Node = { op: i, isCall: false, time: o.ret, match: null, prev: null, next: null };
    call.match = ret;
    events.push(call, ret);
  });
  // Ties (only infinite returns) keep calls first; pending returns go last in op order.
  events.sort((a, b) => (a.time === b.time ? (a.isCall === b.isCall ? a.op - b.op : a.isCall ? -1 : 1) : a.time - b.time));
  const head: Node = { op: -1, isCall: false, time: -Infinity, match: null, prev: null, next: null };
  let last = head;
  for (const e of events) {
    last.next = e;
    e.prev = last;
    last = e;
  }
  const lift = (e: Node): void => {
    (e.prev as Node).next = e.next;
    if (e.next) e.next.prev = e.prev;
    const m = e.match as Node;
    (m.prev as Node).next = m.next;
    if (m.next) m.next.prev = m.prev;
  };
  const unlift = (e: Node): void => {
    const m = e.match as Node;
    (m.prev as Node).next = m;
    if (m.next) m.next.prev = m;
    (e.prev as Node).next = e;
    if (e.next) e.next.prev = e;
  };
  // Zobrist hashing of the set of operations taken: two random 32-bit words per operation, xored in and out.
  // A collision (odds about states² / 2^64) could only hide a path, i.e. report a failure, never a pass.
  const z1 = new Uint32Array(n);
  const z2 = new Uint32Array(n);
  let seed = 0x9e3779b9;
  const rnd = (): number => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  for (let i = 0; i < n; i++) { z1[i] = rnd(); z2[i] = rnd(); }
  let h1 = 0;
  let h2 = 0;
  const cache = new Set<string>();
  const stack: Array<{ e: Node; s: State }> = [];
  let s = initial;
  let e = head.next;
  // Expiries are optional: the search is done when every other operation is taken.
  const optional = (i: number): boolean => (ops[i] as HistEntry).op.kind === 'expire';
  let required = ops.filter((o) => o.op.kind !== 'expire').length;
  while (required > 0) {
    if (e && !e.isCall && optional(e.op)) {
      e = e.next; // an expiry not taken yet never has to be
      continue;
    }
    if (e && e.isCall) {
      const o = ops[e.op] as HistEntry;
      const next = stepModel(s, o.op, o.out);
      if (next) {
        const n1 = (h1 ^ (z1[e.op] as number)) >>> 0;
        const n2 = (h2 ^ (z2[e.op] as number)) >>> 0;
        const ck = `${n1},${n2},${next.exists ? 1 : 0},${next.version},${next.value ?? ''}`;
        if (!cache.has(ck)) {
          if (cache.size >= statesMax) return { key, ok: false, ops: n, exhausted: true };
          cache.add(ck);
          stack.push({ e, s });
          s = next;
          h1 = n1;
          h2 = n2;
          if (!optional(e.op)) required--;
          lift(e);
          e = head.next;
          continue;
        }
      }
      e = e.next;
    } else {
      // A return whose call is not taken yet: undo the last choice.
      const top = stack.pop();
      if (!top) return { key, ok: false, ops: n };
      s = top.s;
      h1 = (h1 ^ (z1[top.e.op] as number)) >>> 0;
      h2 = (h2 ^ (z2[top.e.op] as number)) >>> 0;
      if (!optional(top.e.op)) required++;
      unlift(top.e);
      e = top.e.next;
    }
  }
  return { key, ok: true, ops: n };
}

/** Splits a history by key and checks each; returns the verdicts of the keys that fail. */
export function checkHistory(history: readonly HistEntry[], statesMax?: number): { ok: boolean; failures: KeyVerdict[]; keys: number; ops: number } {
  const byKey = new Map<string, HistEntry[]>();
  for (const h of history) {
    // An unknown get constrains nothing: drop it (it keeps the search small).
    if (h.op.kind === 'get' && !h.out) continue;
    const list = byKey.get(h.key) ?? [];
    list.push(h);
    byKey.set(h.key, list);
  }
  const failures: KeyVerdict[] = [];
  let ops = 0;
  for (const [key, list] of byKey) {
    ops += list.length;
    const v = checkKey(key, list, statesMax);
    if (!v.ok) failures.push(v);
  }
  return { ok: failures.length === 0, failures, keys: byKey.size, ops };
}
