// The linearizability checker (test/helpers/linearizability.ts) on hand-made histories: the ones it must
// accept, and the known anomalies it must reject (each the shape of a row of issue 11's table).
import { describe, expect, it } from 'vitest';
import { checkHistory, checkKey, type HistEntry, type HistOp, type HistOut } from './helpers/linearizability.ts';

function op(call: number, ret: number, o: HistOp, out: HistOut | null, key = 'k'): HistEntry {
  return { key, op: o, call, ret: out ? ret : Infinity, out };
}
const put = (value: string, ifVersion: number | null = null): HistOp => ({ kind: 'put', value, ifVersion });
const del = (ifVersion: number | null = null): HistOp => ({ kind: 'del', ifVersion });
const get: HistOp = { kind: 'get' };
const okW = (version: number, existed = false): HistOut => ({ kind: 'write', version, existed });
const read = (value: string | null, version: number): HistOut => ({ kind: 'get', found: value !== null, value, version });
const conflict = (version: number): HistOut => ({ kind: 'conflict', version });

describe('linearizability checker', () => {
  it('accepts a sequential history with versions, deletes and compare-and-set', () => {
    const h = [
      op(1, 2, put('a'), okW(1)),
      op(3, 4, get, read('a', 1)),
      op(5, 6, put('b', 1), okW(2, true)),
      op(7, 8, put('c', 1), conflict(2)),
      op(9, 10, del(), okW(3, true)),
      op(11, 12, get, read(null, 0)),
      op(13, 14, del(), okW(3, false)),
      op(15, 16, put('d', 0), okW(4, false)),
    ];
    expect(checkKey('k', h).ok).toBe(true);
  });

  it('accepts concurrent operations in either order, and unknown outcomes that took effect or not', () => {
    const h = [
      op(1, 10, put('a'), okW(2, true)),
      op(2, 9, put('b'), okW(1)), // b first, then a: both overlap
      op(11, 12, get, read('a', 2)),
      op(13, 0, put('x'), null), // unknown: takes effect later
      op(14, 15, get, read('a', 2)),
      op(16, 17, get, read('x', 3)),
    ];
    expect(checkKey('k', h).ok).toBe(true);
    const never = [op(1, 0, put('x'), null), op(2, 3, get, read(null, 0))];
    expect(checkKey('k', never).ok).toBe(true);
  });

  it('rejects a stale read after an acknowledged write (paused owner serving)', () => {
    const h = [op(1, 2, put('a'), okW(1)), op(3, 4, put('b'), okW(2, true)), op(5, 6, get, read('a', 1))];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('rejects two values acknowledged at one version (version conflict)', () => {
    const h = [op(1, 2, put('a'), okW(1)), op(3, 4, put('b'), okW(1))];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('rejects a lost acknowledged write (the final read is older)', () => {
    const h = [op(1, 2, put('a'), okW(1)), op(3, 4, put('b'), okW(2, true)), op(5, 6, get, read(null, 0))];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('rejects a write applied twice: the value comes back after a newer acknowledged write', () => {
    const h = [
      op(1, 2, put('a'), okW(1)),
      op(3, 4, put('b'), okW(2, true)),
      op(5, 6, get, read('a', 3)), // a retried put of 'a' applied again
    ];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('rejects a delete that landed but was answered as absent on retry', () => {
    const h = [op(1, 2, put('a'), okW(1)), op(3, 6, del(), okW(1, false)), op(7, 8, get, read(null, 0))];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('rejects a compare-and-set that reports CONFLICT yet took effect', () => {
    const h = [op(1, 2, put('a'), okW(1)), op(3, 4, put('b', 1), conflict(1)), op(5, 6, get, read('b', 2))];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('rejects a read that goes back in time between two readers (regress)', () => {
    const h = [
      op(1, 20, put('b'), null),
      op(2, 3, put('a'), okW(1)),
      op(4, 5, get, read('b', 2)),
      op(6, 7, get, read('a', 1)),
    ];
    expect(checkKey('k', h).ok).toBe(false);
  });

  it('accepts a write answer that does not say whether the key existed (the SDK\'s put), and still checks its version', () => {
    const w = (version: number): HistOut => ({ kind: 'write', version });
    expect(checkKey('k', [op(1, 2, put('a'), w(1)), op(3, 4, put('b'), w(2)), op(5, 6, get, read('b', 2))]).ok).toBe(true);
    expect(checkKey('k', [op(1, 2, put('a'), w(1)), op(3, 4, put('b'), w(1))]).ok).toBe(false);
    expect(checkKey('k', [op(1, 2, put('a'), w(1)), op(3, 4, put('b'), okW(2, false))]).ok).toBe(false);
  });

  it('checks keys independently and reports only the failing one', () => {
    const h = [
      op(1, 2, put('a'), okW(1), 'x'),
      op(3, 4, get, read('a', 1), 'x'),
      op(1, 2, put('a'), okW(1), 'y'),
      op(3, 4, get, read(null, 0), 'y'),
    ];
    const r = checkHistory(h);
    expect(r.ok).toBe(false);
    expect(r.failures.map((f) => f.key)).toEqual(['y']);
    expect(r.keys).toBe(2);
  });

  it('handles a long history with many unknown outcomes quickly', () => {
    const h: HistEntry[] = [];
    let now = 0;
    let v = 0;
    for (let i = 0; i < 300; i++) {
      if (i % 5 === 4) h.push(op(++now, 0, put(`u${i}`, 999), null)); // never holds, unknown
      else {
        const c = ++now;
        h.push(op(c, ++now, put(`v${i}`), okW(++v, v > 1)));
        h.push(op(++now, ++now, get, read(`v${i}`, v)));
      }
    }
    expect(checkKey('k', h).ok).toBe(true);
  });

  describe('expiry (a put with a ttl brings an optional expire of its value, called at invocation + ttl)', () => {
    const expire = (call: number, value: string): HistEntry => ({ key: 'k', op: { kind: 'expire', value }, call, ret: Infinity, out: null });

    it('accepts an expiry that happened, late or never, and CAS against the expired key', () => {
      const h = [op(1, 2, put('a'), okW(1)), expire(5.5, 'a'), op(3, 4, get, read('a', 1)), op(6, 7, get, read('a', 1)), op(8, 9, get, read(null, 2)), op(10, 11, put('b', 0), okW(3, false)), op(12, 13, get, read('b', 3))];
      expect(checkKey('k', h).ok).toBe(true);
      // Never expired (a late expiry constrains nothing).
      expect(checkKey('k', [op(1, 2, put('a'), okW(1)), expire(2.5, 'a'), op(20, 21, get, read('a', 1))]).ok).toBe(true);
      // Overwritten before its deadline: the expiry of the old value does nothing to the new one.
      expect(checkKey('k', [op(1, 2, put('a'), okW(1)), op(3, 4, put('b'), okW(2, true)), expire(5.5, 'a'), op(6, 7, get, read('b', 2))]).ok).toBe(true);
    });

    it('rejects an early expiry (absent before invocation + ttl) and a resurrection', () => {
      expect(checkKey('k', [op(1, 2, put('a'), okW(1)), expire(5.5, 'a'), op(3, 4, get, read(null, 2))]).ok).toBe(false);
      expect(checkKey('k', [op(1, 2, put('a'), okW(1)), expire(2.5, 'a'), op(3, 4, get, read(null, 2)), op(5, 6, get, read('a', 1))]).ok).toBe(false);
      // The expiry takes a version: a put after it that reports the value's next version did not follow it.
      expect(checkKey('k', [op(1, 2, put('a'), okW(1)), expire(2.5, 'a'), op(3, 4, get, read(null, 2)), op(5, 6, put('b'), okW(2, false))]).ok).toBe(false);
    });
  });
});
