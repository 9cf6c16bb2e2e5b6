// The SDK's per-operation fast paths (issue 15) against straightforward references of what they replaced:
// the floor's least-recently-used list (client/floor.ts) against a Map of `${ring}/${keyHash}` ids kept in use
// order by delete + set (the earlier implementation), and a range session's lowest outstanding sequence number
// (client/index.ts, the `floor` of every write's (session, seq, floor)) against the minimum of what is in flight.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EkvClient, EkvError } from '../client/index.ts';
import { Floor, floorRingsMax, type FloorEntry } from '../client/floor.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-fastpaths-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const kh = (k: Buffer): string => createHash('sha256').update(k).digest('hex').slice(0, 32);
const vh = (v: Buffer | null): string | null => (v === null ? null : createHash('sha256').update(v).digest('hex').slice(0, 16));

/** The earlier floor's key bookkeeping: one Map in use order, an entry replaced only by a higher version. */
class ModelFloor {
  readonly keys = new Map<string, FloorEntry>();
  constructor(private readonly max: number) {}
  raise(ring: string, key: Buffer, e: FloorEntry): void {
    const id = `${ring}/${kh(key)}`;
    const have = this.keys.get(id);
    this.keys.delete(id);
    this.keys.set(id, have && have.v >= e.v ? have : e);
    while (this.keys.size > this.max) this.keys.delete(this.keys.keys().next().value as string);
  }
  get(ring: string, key: Buffer): FloorEntry | undefined {
    return this.keys.get(`${ring}/${kh(key)}`);
  }
}

function staleVersion(f: () => void): number | null {
  try {
    f();
    return null;
  } catch (err) {
    if (err instanceof EkvError && err.code === 'STALE') return err.version ?? -1;
    throw err;
  }
}

function rng(seed: number): () => number {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

describe("the floor's use-ordered list", () => {
  it('remembers, replaces and drops exactly what a Map kept in use order does, across rings, and saves in that order', () => {
    const rings = ['a'.repeat(64), 'b'.repeat(64), 'none'];
    const keys = Array.from({ length: 40 }, (_, i) => Buffer.from(`key-${i}`));
    for (const seed of [1, 2, 3, 4]) {
      const rand = rng(seed);
      const file = join(dir, `floor-${seed}`);
      const f = new Floor({ keysMax: 16, file });
      const model = new ModelFloor(16);
      const versions = new Map<string, number>();
      for (let step = 0; step < 3000; step++) {
        const ring = rings[Math.floor(rand() * rings.length)] as string;
        const key = keys[Math.floor(rand() * keys.length)] as Buffer;
        const id = `${ring}/${key}`;
        const seen = model.get(ring, key);
        expect(f.snapshot(key).get(ring)).toEqual(seen);
        const r = rand();
        if (r < 0.5) {
          // A write, acknowledged above what was seen.
          const v = (versions.get(id) ?? 0) + 1 + Math.floor(rand() * 3);
          versions.set(id, v);
          const value = rand() < 0.2 ? null : Buffer.from(`v${v}`);
          f.checkWrite(ring, key, f.snapshot(key), v, value);
          model.raise(ring, key, { v, h: vh(value) });
        } else {
          // A read answering the version seen (same value) or an older one the floor must refuse.
          const older = seen !== undefined && seen.v > 1 && rand() < 0.2;
          const v = seen === undefined ? 0 : older ? seen.v - 1 : seen.v;
          const value = seen?.h === null ? null : Buffer.from(`v${v}`);
          const before = f.snapshot(key);
          let refused: EkvError | null = null;
          try {
            f.checkRead(ring, key, before, v, value);
          } catch (err) {
            refused = err as EkvError;
          }
          if (older) expect(refused).toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
          else if (seen === undefined || vh(value) === seen.h || v === 0) {
            expect(refused).toBeNull();
            model.raise(ring, key, { v, h: vh(value) });
          } else expect(refused).toMatchObject({ code: 'STALE', reason: 'FORKED_VALUE' });
        }
        expect(f.size).toBe(model.keys.size);
      }
      f.save();
      const saved = JSON.parse(readFileSync(file, 'utf8')) as { keys: Array<[string, string, number, string | null]> };
      expect(saved.keys).toEqual([...model.keys].map(([id, e]) => [...id.split('/'), e.v, e.h]));
      // Read back: the same floor, in the same order (the next save writes the same list).
      const again = new Floor({ keysMax: 16, file });
      for (const ring of rings) for (const key of keys) expect(again.snapshot(key).get(ring)).toEqual(model.get(ring, key));
    }
  });

  it("an answer's check finds its key again when the snapshot's entry was dropped or re-made in between", () => {
    const ring = 'a'.repeat(64);
    const [a, b, c] = ['a', 'b', 'c'].map((x) => Buffer.from(x)) as [Buffer, Buffer, Buffer];
    const f = new Floor({ keysMax: 2, file: join(dir, 'floor-hint') });
    f.checkWrite(ring, a, f.snapshot(a), 1, a);
    const sent = f.snapshot(a); // a write of a is sent ...
    f.checkWrite(ring, b, f.snapshot(b), 1, b);
    f.checkWrite(ring, c, f.snapshot(c), 1, c); // ... a is dropped (least recently used) ...
    expect(f.snapshot(a).get(ring)).toBeUndefined();
    f.checkWrite(ring, a, sent, 2, a); // ... and its answer puts it back, as the newest
    expect(f.snapshot(a).get(ring)?.v).toBe(2);
    expect(f.size).toBe(2);
    expect(f.snapshot(b).get(ring)).toBeUndefined();
    // A save re-makes every entry; a check sent before it lands on the entry the floor keeps now.
    const before = f.snapshot(c);
    f.save();
    f.checkRead(ring, c, before, 5, c);
    expect(f.snapshot(c).get(ring)?.v).toBe(5);
    expect(staleVersion(() => f.checkRead(ring, c, f.snapshot(c), 4, c))).toBe(5);
  });

  it('drops the keys of the least recently used ring beyond floorRingsMax, and only those', () => {
    const f = new Floor();
    const key = Buffer.from('k');
    const ring = (i: number): string => i.toString(16).padStart(64, '0');
    for (let i = 0; i <= floorRingsMax; i++) f.checkWrite(ring(i), key, f.snapshot(key), 1, key);
    expect(f.snapshot(key).get(ring(0))).toBeUndefined();
    expect(f.snapshot(key).get(ring(1))?.v).toBe(1);
    expect(f.snapshot(key).size).toBe(floorRingsMax);
    expect(f.size).toBe(floorRingsMax);
    // A snapshot is still a whole ReadonlyMap (Floor is public API).
    const snap = f.snapshot(key);
    const asMap = new Map(snap);
    expect(asMap.size).toBe(floorRingsMax);
    expect(snap.has(ring(1))).toBe(true);
    expect(snap.has(ring(0))).toBe(false);
    expect([...snap.keys()]).toEqual([...asMap.keys()]);
    expect([...snap.values()].every((e) => e.v === 1)).toBe(true);
    let n = 0;
    snap.forEach((e, r, m) => {
      expect(m.get(r)).toBe(e);
      n++;
    });
    expect(n).toBe(floorRingsMax);
  });
});

type Routed = (key: Buffer, op: string, args: Record<string, unknown>, via: { conn?: unknown }) => Promise<Record<string, unknown>>;

describe("a range session's lowest outstanding sequence number", () => {
  it('is the `floor` every write carries: the lowest write not finished, however writes finish', async () => {
    const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: '00'.repeat(48) } }, { timeoutMs: 1000, floor: null });
    const held: Array<{ seq: number; done: (r: Record<string, unknown>) => void }> = [];
    const sent: Array<[number, number, number]> = [];
    (kv as unknown as { callRouted: Routed }).callRouted = async (_key, op, args) => {
      if (op === 'open') return { s: 7, sh: 0, S: 1, w: 8 };
      const s = args.s as [number, number, number];
      sent.push(s);
      return new Promise((done) => held.push({ seq: s[1], done }));
    };
    const rand = rng(9);
    const inflight = new Set<number>();
    const writes: Array<Promise<number>> = [];
    const tick = () => new Promise((r) => setImmediate(r));
    for (let i = 0; i < 400; i++) {
      writes.push(kv.put(`k${i % 13}`, 'v'));
      await tick();
      for (const s of sent.splice(0)) {
        inflight.add(s[1]);
        expect(s[0]).toBe(7);
        expect(s[2]).toBe(Math.min(...inflight)); // the floor: the lowest seq not finished (this one included)
        expect(s[1] - s[2]).toBeLessThan(8 - 1); // within the window
      }
      // Finish a random few, in any order.
      while (held.length > 0 && rand() < 0.6) {
        const [h] = held.splice(Math.floor(rand() * held.length), 1);
        if (!h) break;
        inflight.delete(h.seq);
        h.done({ n: h.seq });
      }
      await tick();
    }
    while (held.length > 0 || sent.length > 0) {
      for (const s of sent.splice(0)) inflight.add(s[1]);
      for (const h of held.splice(0)) {
        inflight.delete(h.seq);
        h.done({ n: h.seq });
      }
      await tick();
    }
    expect((await Promise.all(writes)).length).toBe(400);
  });
});
