// The sealed log's append-only segments (docs/durability.md T1-T6): a torn tail at any byte offset of the
// last record (or anywhere in the last batch, or zero-filled) is cut off and never served, while a flipped
// byte in any earlier record, a reordered, duplicated, dropped or spliced record is refused; appends resolve
// only once they and every earlier append are durable, and a crash during an append leaves a log that opens
// to the durable prefix and continues. The host side: appends queued on a connection are written as one
// group, and a failed append poisons its file.
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync, renameSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { appendHeaderBytes } from '../enclave/seal/constants.ts';
import { SealError } from '../enclave/seal/errors.ts';
import { deriveSealKeys } from '../enclave/seal/keys.ts';
import { appendsInFlightMax, SealedStore } from '../enclave/seal/log.ts';
import { parseAnySegment, parseSegmentName } from '../enclave/seal/record.ts';
import { FakeBlobs } from './helpers/fake-blobs.ts';
import { startSealEnv, type SealEnv } from './helpers/seal-env.ts';

const dataKey = randomBytes(32);
const nodeId = randomBytes(16);
const keys = deriveSealKeys(dataKey, nodeId);
const open = (blobs: FakeBlobs) => SealedStore.open({ blobs, dataKey, nodeId });
const rec = (i: number): Buffer => Buffer.from(`record ${i} `.padEnd(12 + (i % 5) * 7, 'x'));
const texts = (n: number, from = 0): string[] => Array.from({ length: n }, (_, i) => String(rec(from + i)));

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof SealError ? err.code : String(err);
  }
}

/** The segment names of a fake store, in order. */
async function segs(blobs: FakeBlobs): Promise<string[]> {
  return (await blobs.list('wal-')).sort();
}

/** Byte ranges of the records of an append-only segment. */
function records(name: string, bytes: Uint8Array, newest = false): Array<{ start: number; end: number }> {
  const { raws } = parseAnySegment(bytes, keys, name, parseSegmentName(name)!, newest);
  return raws.map((r, i) => ({ start: r.offset, end: raws[i + 1]?.offset ?? bytes.length }));
}

/** One segment of n records written in turns of `perTurn` (each turn one append request). */
async function build(n: number, perTurn = 2): Promise<{ blobs: FakeBlobs; name: string; bytes: Buffer; ranges: Array<{ start: number; end: number }> }> {
  const blobs = new FakeBlobs();
  const { store } = await open(blobs);
  for (let i = 0; i < n; i += perTurn) {
    await Promise.all(Array.from({ length: Math.min(perTurn, n - i) }, (_, j) => store.append(rec(i + j))));
  }
  await store.close();
  const [name] = await segs(blobs);
  const bytes = Buffer.from(blobs.blobs.get(name!)!);
  return { blobs, name: name!, bytes, ranges: records(name!, bytes) };
}

describe('append-only segments: torn tails (T3)', () => {
  it('a torn tail at every byte offset of the last record is cut off, never served, and the log continues after it', async () => {
    const { blobs, name, bytes, ranges } = await build(6);
    const last = ranges.at(-1)!;
    expect(last.end).toBe(bytes.length);
    for (let cut = last.start + 1; cut < last.end; cut++) {
      blobs.blobs.set(name, bytes.subarray(0, cut));
      const { store, recovered } = await open(blobs);
      expect(recovered.records.map(String), `cut at ${cut}`).toEqual(texts(5));
      expect(recovered.lastSeq).toBe(5);
      expect(store.stats().tornBytes).toBe(cut - last.start);
      // Cut for good before anything is appended after it (T3), so the next record follows record 5.
      expect(Buffer.from(blobs.blobs.get(name)!).equals(bytes.subarray(0, last.start))).toBe(true);
      await store.append(Buffer.from('after the cut'));
      await store.close();
      const again = await open(blobs);
      expect(again.recovered.records.map(String)).toEqual([...texts(5), 'after the cut']);
      expect(again.store.stats().tornBytes).toBe(0);
      await again.store.close();
      for (const n of await segs(blobs)) if (n !== name) blobs.blobs.delete(n);
    }
  });

  it('the last record complete but failing authentication (a torn write inside it) is cut off at every byte of its body', async () => {
    const { blobs, name, bytes, ranges } = await build(4);
    const last = ranges.at(-1)!;
    for (let at = last.start + 56; at < last.end; at++) {
      const b = Buffer.from(bytes);
      b[at]! ^= 0x20;
      blobs.blobs.set(name, b);
      const { recovered } = await open(blobs);
      expect(recovered.records.map(String), `byte ${at}`).toEqual(texts(3));
    }
  });

  it('property: any cut of the newest segment, plain or zero-filled, serves exactly the records wholly before it', async () => {
    const base = await build(9, 3);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: base.bytes.length }), fc.integer({ min: 0, max: 300 }), fc.boolean(), async (cut, zeros, fill) => {
        const blobs = new FakeBlobs();
        const torn = fill ? Buffer.concat([base.bytes.subarray(0, cut), Buffer.alloc(zeros)]) : base.bytes.subarray(0, cut);
        blobs.blobs.set(base.name, torn);
        // Zero fill that matches the original bytes (a tag ending in 0x00) restores them: count them as intact.
        let intact = cut;
        while (fill && intact < cut + zeros && intact < base.bytes.length && base.bytes[intact] === 0) intact++;
        const whole = base.ranges.filter((r) => r.end <= intact).length;
        const { store, recovered } = await open(blobs);
        expect(recovered.records.map(String)).toEqual(texts(whole));
        await store.append(Buffer.from('next'));
        await store.close();
        expect((await open(blobs)).recovered.records.map(String)).toEqual([...texts(whole), 'next']);
      }),
      { numRuns: 150 },
    );
  });

  it('a torn tail is accepted only in the newest segment: an older segment cut short is refused', async () => {
    const blobs = new FakeBlobs();
    for (let i = 0; i < 3; i++) {
      const { store } = await open(blobs); // each open starts a new segment (T6)
      await Promise.all([store.append(rec(2 * i)), store.append(rec(2 * i + 1))]);
      await store.close();
    }
    const names = await segs(blobs);
    expect(names).toHaveLength(3);
    const middle = Buffer.from(blobs.blobs.get(names[1]!)!);
    blobs.blobs.set(names[1]!, middle.subarray(0, middle.length - 5));
    expect(await code(open(blobs))).toBe('SEAL_TRUNCATED');
    blobs.blobs.set(names[1]!, Buffer.concat([middle, Buffer.alloc(64)]));
    expect(await code(open(blobs))).toBe('SEAL_CORRUPT');
  });
});

describe('append-only segments: damage that is not a torn tail is refused (T4)', () => {
  it('a flipped byte anywhere in a record before the last: SEAL_CORRUPT, at every byte offset', async () => {
    const { blobs, name, bytes, ranges } = await build(5);
    for (const r of [ranges[1]!, ranges[3]!]) {
      for (let at = r.start; at < r.end; at++) {
        const b = Buffer.from(bytes);
        b[at]! ^= 0x01;
        blobs.blobs.set(name, b);
        expect(await code(open(blobs)), `byte ${at}`).toBe('SEAL_CORRUPT');
      }
    }
  });

  it("a flipped byte in the last record's header (its length or position): SEAL_CORRUPT", async () => {
    const { blobs, name, bytes, ranges } = await build(3);
    const last = ranges.at(-1)!;
    for (let at = last.start; at < last.start + 56; at++) {
      const b = Buffer.from(bytes);
      b[at]! ^= 0x80;
      blobs.blobs.set(name, b);
      expect(await code(open(blobs)), `byte ${at}`).toBe('SEAL_CORRUPT');
    }
  });

  it('reordered, duplicated or dropped records: SEAL_REORDERED, SEAL_REPLAYED, SEAL_GAP (in the middle and at the end)', async () => {
    const { blobs, name, bytes, ranges } = await build(6);
    const part = (i: number) => bytes.subarray(ranges[i]!.start, ranges[i]!.end);
    const head = bytes.subarray(0, appendHeaderBytes);
    const layout = (order: number[]) => Buffer.concat([head, ...order.map(part)]);
    const moved = ['SEAL_REORDERED', 'SEAL_GAP'];
    const cases: Array<[number[], string[]]> = [
      [[0, 2, 1, 3, 4, 5], moved],
      [[0, 1, 2, 3, 5, 4], moved],
      [[0, 1, 1, 2, 3, 4, 5], ['SEAL_REPLAYED']],
      [[0, 1, 2, 3, 4, 5, 5], ['SEAL_REPLAYED']],
      [[0, 1, 2, 3, 4, 5, 2], ['SEAL_REORDERED']],
      [[0, 2, 3, 4, 5], ['SEAL_GAP']],
      [[0, 1, 2, 3, 4], ['OK']], // the last record dropped: an older genuine state (rollback, T5)
      [[1, 2, 3, 4, 5], ['SEAL_REORDERED']],
    ];
    for (const [order, want] of cases) {
      blobs.blobs.set(name, layout(order));
      expect(want, order.join(',')).toContain(await code(open(blobs)));
    }
  });

  it('a record spliced in from another history (a rolled-back copy) or from another segment: refused', async () => {
    const a = await build(6);
    // History B: the host rolled A back to 3 records, and the node appended other records 4 and 5.
    const blobs = new FakeBlobs();
    blobs.blobs.set(a.name, a.bytes.subarray(0, a.ranges[2]!.end));
    const { store } = await open(blobs);
    await Promise.all([store.append(Buffer.from('b4')), store.append(Buffer.from('b5'))]);
    await store.close();
    const names = await segs(blobs);
    expect(names).toHaveLength(2);
    const bName = names[1]!;
    const b = Buffer.from(blobs.blobs.get(bName)!);
    const bRanges = records(bName, b);
    // A's record 4 in place of B's record 4 (same position, other history), then B's record 5.
    const spliced = Buffer.concat([b.subarray(0, bRanges[0]!.start), a.bytes.subarray(a.ranges[3]!.start, a.ranges[3]!.end), b.subarray(bRanges[1]!.start)]);
    blobs.blobs.set(bName, spliced);
    expect(await code(open(blobs))).toBe('SEAL_REPLAYED');
    // A's records 4..6 appended to B's segment after B's own (its position taken): refused.
    blobs.blobs.set(bName, Buffer.concat([b, a.bytes.subarray(a.ranges[3]!.start)]));
    expect(['SEAL_REORDERED', 'SEAL_REPLAYED']).toContain(await code(open(blobs)));
    // B's second segment under a name that claims another first record: refused.
    blobs.blobs.delete(bName);
    blobs.blobs.set('wal-0000000000000005', b);
    expect(['SEAL_REORDERED', 'SEAL_GAP']).toContain(await code(open(blobs)));
  });
});

/** A blob store whose append answers the test releases by hand (or never), landing what it is told to. */
class ManualBlobs extends FakeBlobs {
  readonly calls: Array<{ name: string; bytes: Uint8Array; create: boolean; answer: (ok: boolean) => void; land: (n?: number) => void }> = [];
  override append(name: string, bytes: Uint8Array, create: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.calls.push({
        name, bytes, create,
        answer: (ok) => (ok ? resolve() : reject(new SealError('SEAL_IO', 'blob store refused append: IO'))),
        land: (n = bytes.length) => {
          const old = create ? new Uint8Array(0) : this.blobs.get(name) ?? new Uint8Array(0);
          this.blobs.set(name, Buffer.concat([old, bytes.subarray(0, n)]));
        },
      });
    });
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe('append-only segments: durability and order (T1, T2)', () => {
  it('one append request per turn, pipelined; a record resolves only once its append and every earlier one were answered', async () => {
    const blobs = new ManualBlobs();
    const { store } = await open(blobs);
    const done: string[] = [];
    const put = (s: string) => store.append(Buffer.from(s)).then(() => done.push(s));
    void put('a1');
    void put('a2');
    await tick();
    void put('b1');
    await tick();
    void put('c1');
    await tick();
    expect(blobs.calls.map((c) => c.create)).toEqual([true, false, false]); // three turns, three requests, none waited
    // The host answers the later ones first: nothing is acknowledged before the first is.
    for (const c of blobs.calls) c.land();
    blobs.calls[2]!.answer(true);
    blobs.calls[1]!.answer(true);
    await tick();
    expect(done).toEqual([]);
    blobs.calls[0]!.answer(true);
    await tick();
    expect(done).toEqual(['a1', 'a2', 'b1', 'c1']);
    expect(store.stats().durableSeq).toBe(4);
  });

  it('at most appendsInFlightMax requests are out: later turns wait for an answer and then go out as one request', async () => {
    const blobs = new ManualBlobs();
    const { store } = await open(blobs);
    const all: Array<Promise<number>> = [];
    for (let t = 0; t < appendsInFlightMax + 2; t++) {
      all.push(store.append(rec(t)));
      await tick();
    }
    expect(blobs.calls).toHaveLength(appendsInFlightMax);
    blobs.calls[0]!.land();
    blobs.calls[0]!.answer(true);
    await tick();
    expect(blobs.calls).toHaveLength(appendsInFlightMax + 1); // the two waiting turns, in one request
    for (const c of blobs.calls.slice(1)) c.land();
    for (const c of blobs.calls.slice(1)) c.answer(true);
    expect(await Promise.all(all)).toEqual(Array.from({ length: appendsInFlightMax + 2 }, (_, i) => i + 1));
    expect((await open(blobs)).recovered.records.map(String)).toEqual(texts(appendsInFlightMax + 2));
  });

  it('a failed append fails every later one too (fail closed) and resync continues in a new segment (T6)', async () => {
    const blobs = new ManualBlobs();
    const { store } = await open(blobs);
    const p1 = store.append(rec(0));
    await tick();
    const p2 = store.append(rec(1));
    await tick();
    blobs.calls[0]!.land();
    blobs.calls[0]!.answer(true);
    blobs.calls[1]!.answer(false);
    expect(await code(p1)).toBe('OK');
    expect(await code(p2)).toBe('SEAL_IO');
    expect(await code(store.append(rec(2)))).toBe('SEAL_IO');
    const healed = store.resync(Buffer.from('state'));
    await healed;
    const p3 = store.append(rec(3));
    await tick();
    const last = blobs.calls.at(-1)!;
    expect(last.create).toBe(true);
    expect(last.name).not.toBe(blobs.calls[0]!.name);
    last.land();
    last.answer(true);
    await p3;
  });

  it('a crash during an append (part of the batch on disk, later appends in flight): reopen serves the acknowledged records and the whole ones before the tear', async () => {
    for (const landed of [0, 1, 30, 57, 80, 150]) {
      const blobs = new ManualBlobs();
      const { store } = await open(blobs);
      const acked = Promise.all([store.append(rec(0)), store.append(rec(1))]);
      await tick();
      blobs.calls[0]!.land();
      blobs.calls[0]!.answer(true);
      await acked;
      const inFlight = [store.append(rec(2)), store.append(rec(3)), store.append(rec(4))];
      await tick();
      const more = store.append(rec(5));
      await tick();
      let settled = false;
      void Promise.allSettled([...inFlight, more]).then(() => (settled = true));
      // The host wrote part of the second request, then the machine stopped: nothing more is answered.
      const second = blobs.calls[1]!;
      const n = Math.min(landed, second.bytes.length);
      second.land(n);
      await tick();
      expect(settled).toBe(false);
      const whole = records(second.name, blobs.blobs.get(second.name)!, true).length - 2; // whole records of the torn request
      const again = await open(blobs);
      expect(again.recovered.records.map(String), `landed ${n}`).toEqual(texts(2 + Math.max(0, whole)));
      // And it goes on: the next record follows the served ones, in a new segment.
      const next = again.store.append(Buffer.from('after'));
      await tick();
      blobs.calls.at(-1)!.land();
      blobs.calls.at(-1)!.answer(true);
      await next;
      expect((await open(blobs)).recovered.records.map(String)).toEqual([...texts(2 + Math.max(0, whole)), 'after']);
    }
  });
});

describe('append-only segments through the host blob store', () => {
  let env: SealEnv;
  afterEach(async () => env?.cleanup());

  it('appends queued on a connection are written as one group, in order; a failed append poisons its file until it is created again', async () => {
    env = await startSealEnv();
    const c = env.client();
    await c.append('wal-0000000000000001', Buffer.from('head:'), true);
    const parts = Array.from({ length: 40 }, (_, i) => Buffer.from(`<${i}>`));
    await Promise.all(parts.map((p) => c.append('wal-0000000000000001', p, false)));
    expect(readFileSync(join(env.dir, 'wal-0000000000000001'), 'latin1')).toBe('head:' + parts.join(''));
    expect(env.server.stats.appends).toBe(41);
    expect(env.server.stats.appendGroups).toBeLessThan(41);
    // Appending to a file that is not there fails, and poisons the name: a later append is refused even
    // once something put a file there, until an append creates it again.
    expect(await code(c.append('wal-0000000000000009', Buffer.from('x'), false))).toBe('SEAL_IO');
    writeFileSync(join(env.dir, 'wal-0000000000000009'), 'planted');
    expect(await code(c.append('wal-0000000000000009', Buffer.from('y'), false))).toBe('SEAL_IO');
    expect(readFileSync(join(env.dir, 'wal-0000000000000009'), 'latin1')).toBe('planted');
    await c.append('wal-0000000000000009', Buffer.from('new'), true);
    await c.append('wal-0000000000000009', Buffer.from('+'), false);
    expect(readFileSync(join(env.dir, 'wal-0000000000000009'), 'latin1')).toBe('new+');
  });

  it('the store keeps the segment it appends to open between groups, yet appends to what the path names (cut, replaced, removed behind it)', async () => {
    env = await startSealEnv();
    const c = env.client();
    const name = 'wal-0000000000000001';
    const path = join(env.dir, name);
    // The store runs in this process: its open handles are ours, and /proc/self/fd names their files.
    const handles = () => readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(path);
      } catch {
        return false;
      }
    }).length;
    await c.append(name, Buffer.from('a'), true);
    await c.append(name, Buffer.from('b'), false);
    expect(readFileSync(path, 'latin1')).toBe('ab');
    expect(handles()).toBe(1); // kept open between groups (one handle, not one per group)
    // Cut behind the store's back: the next group goes at the file's real end (its size is read every group).
    truncateSync(path, 1);
    await c.append(name, Buffer.from('c'), false);
    expect(readFileSync(path, 'latin1')).toBe('ac');
    // Replaced behind it (a new file renamed over the name): appended to the new file, as a fresh open would.
    writeFileSync(join(env.dir, 'other'), 'new');
    renameSync(join(env.dir, 'other'), path);
    await c.append(name, Buffer.from('d'), false);
    expect(readFileSync(path, 'latin1')).toBe('newd');
    expect(handles()).toBe(1);
    // Removed behind it: no such blob to append to (and the handle of the removed file is gone).
    unlinkSync(path);
    expect(await code(c.append(name, Buffer.from('e'), false))).toBe('SEAL_IO');
    expect(handles()).toBe(0);
    // A put and a delete through the store drop its handle too.
    await c.append(name, Buffer.from('f'), true);
    expect(handles()).toBe(1);
    await c.put(name, Buffer.from('put'));
    expect(handles()).toBe(0);
    await c.append(name, Buffer.from('g'), false);
    expect(readFileSync(path, 'latin1')).toBe('putg');
    await c.delete(name);
    expect(handles()).toBe(0);
  });

  it('a sealed log on the real store: torn by a cut on disk, reopened, continued', async () => {
    env = await startSealEnv();
    const { store } = await env.open();
    for (let i = 0; i < 4; i++) await Promise.all([store.append(rec(2 * i)), store.append(rec(2 * i + 1))]);
    await store.close();
    const name = (await env.client().list('wal-'))[0]!;
    const path = join(env.dir, name);
    truncateSync(path, readFileSync(path).length - 3);
    const again = await env.open();
    expect(again.recovered.records.map(String)).toEqual(texts(7));
    await again.store.append(rec(7));
    await again.store.close();
    expect((await env.open()).recovered.records.map(String)).toEqual(texts(8));
  });
});
