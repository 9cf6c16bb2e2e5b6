// The scan core (enclave/data/scan.ts), the SDK's cursor codec and k-way merge (client/scan.ts), and the batcher
// (client/batch.ts), against reference models with random cases (fast-check). No ring, no sockets.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Entry, type ScanDecision, selectPage, type ScanView } from '../enclave/data/index.ts';
import { cursorCharsMax, decodeCursor, encodeCursor, scanIterate, scanPage } from '../client/scan.ts';
import { Batcher, type ClientPort } from '../client/batch.ts';
import { EkvError } from '../protocol/errors.ts';
import type { RpcResult } from '../protocol/rpc.ts';

const keyArb = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '/', '\x00', '\xff'), minLength: 1, maxLength: 5 });

interface Model {
  view: ScanView;
  /** What a get would see: key -> value (only keys with a value). */
  readable: Map<string, { value: string; version: number }>;
}

const modelArb = fc.array(
  fc.record({ key: keyArb, value: fc.option(fc.string({ maxLength: 8 }), { nil: null }), version: fc.integer({ min: 1, max: 9 }), inflight: fc.option(fc.option(fc.string({ maxLength: 4 }), { nil: null }), { nil: undefined }) }),
  { maxLength: 60 },
).map((rows): Model => {
  const data = new Map<string, Entry>();
  const inflight = new Map<string, { prev: Entry | undefined }>();
  for (const r of rows) {
    data.set(r.key, { value: r.value, version: r.version, epoch: 1 });
    // A write in flight: `data` holds the new (unacknowledged) entry, readers see the previous one.
    if (r.inflight !== undefined) inflight.set(r.key, { prev: r.inflight === null ? undefined : { value: r.inflight, version: r.version - 1 || 1, epoch: 1 } });
  }
  const readable = new Map<string, { value: string; version: number }>();
  for (const [k, e] of data) {
    const f = inflight.get(k);
    const seen = f ? f.prev : e;
    if (seen && seen.value !== null) readable.set(k, { value: seen.value, version: seen.version });
  }
  return { view: { data, inflight }, readable };
});

const sorted = (ks: Iterable<string>): string[] => [...ks].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

describe('the scan core (selectPage)', () => {
  it('pages through exactly the readable, allowed keys with the prefix, in byte order, whatever the limits', () => {
    fc.assert(fc.property(modelArb, fc.constantFrom('', 'a', 'b/', '\x00'), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 40 }), fc.func(fc.boolean()), fc.boolean(), (m, prefix, limit, bytesMax, allowFn, values) => {
      const allow = (k: string): boolean => !k.includes('c') || allowFn(k);
      const want = sorted([...m.readable.keys()].filter((k) => k.startsWith(prefix) && allow(k)));
      const got: string[] = [];
      let after: string | null = null;
      for (let pages = 0; pages < 200; pages++) {
        const p = selectPage(m.view, { prefix, after, limit, bytesMax, values, decide: allow });
        expect(p.wait).toBeNull();
        expect(p.entries.length).toBeLessThanOrEqual(limit);
        for (const e of p.entries) {
          const r = m.readable.get(e.key);
          expect(r).toBeDefined();
          expect(e.version).toBe(r?.version);
          expect(e.value).toBe(values ? r?.value : null);
          got.push(e.key);
        }
        if (!p.more) break;
        expect(p.entries.length).toBeGreaterThan(0); // progress: "more" always comes with an entry to resume after
        after = (p.entries[p.entries.length - 1] as { key: string }).key;
      }
      expect(got).toEqual(want);
    }));
  });

  it('a page filled by the limit holds the first allowed keys: refused keys are not counted, nor revealed by "more"', () => {
    const data = new Map<string, Entry>();
    for (let i = 0; i < 50; i++) data.set(`a/secret-${String(i).padStart(2, '0')}`, { value: 'x', version: 1, epoch: 1 });
    data.set('b/open-1', { value: 'y', version: 1, epoch: 1 });
    data.set('b/open-2', { value: 'y', version: 1, epoch: 1 });
    const view = { data, inflight: new Map() };
    const decide = (k: string): boolean => !k.startsWith('a/');
    const p = selectPage(view, { prefix: '', after: null, limit: 2, bytesMax: 1 << 20, values: false, decide });
    expect(p.entries.map((e) => e.key)).toEqual(['b/open-1', 'b/open-2']);
    expect(p.more).toBe(false); // the same answer as a range that holds no secret key at all
    const none = selectPage({ data: new Map([...data].filter(([k]) => !k.startsWith('a/'))), inflight: new Map() }, { prefix: '', after: null, limit: 2, bytesMax: 1 << 20, values: false, decide });
    expect(none).toEqual(p);
  });

  it('bytesStrict: a continued page takes no entry past its bytes, not even a first one', () => {
    const data = new Map<string, Entry>([['a', { value: 'x'.repeat(100), version: 1, epoch: 1 }], ['b', { value: 'y', version: 1, epoch: 1 }]]);
    const q = { prefix: '', after: null, limit: 10, bytesMax: 50, values: true, decide: () => true };
    expect(selectPage({ data, inflight: new Map() }, q).entries.map((e) => e.key)).toEqual(['a']);
    expect(selectPage({ data, inflight: new Map() }, { ...q, bytesStrict: true })).toMatchObject({ entries: [], more: true });
  });

  it('stops to wait for the filter and resumes where it stopped, never skipping or repeating a key', async () => {
    await fc.assert(fc.asyncProperty(modelArb, fc.integer({ min: 1, max: 5 }), async (m, limit) => {
      const known = new Set<string>();
      const decide = (k: string): ScanDecision => {
        if (known.has(k)) return true;
        known.add(k);
        return { wait: Promise.resolve() };
      };
      const got: string[] = [];
      let after: string | null = null;
      for (let rounds = 0; rounds < 1000; rounds++) {
        const p = selectPage(m.view, { prefix: '', after, limit, bytesMax: 1 << 20, values: false, decide });
        got.push(...p.entries.map((e) => e.key));
        if (p.wait) {
          await p.wait.promise;
          after = p.wait.resume;
          continue;
        }
        if (!p.more) break;
        after = (p.entries[p.entries.length - 1] as { key: string }).key;
      }
      expect(got).toEqual(sorted(m.readable.keys()));
    }));
  });

  it('a refused namespace is skipped whole: the same pages as deciding every key', () => {
    fc.assert(fc.property(modelArb, fc.integer({ min: 1, max: 5 }), fc.func(fc.boolean()), (m, limit, allowNs) => {
      // Decisions by namespace (the part before the first '/'), as the access module's are.
      const group = (k: string): string | null => (k.indexOf('/') > 0 ? k.slice(0, k.indexOf('/') + 1) : null);
      const allow = (k: string): boolean => { const g = group(k); return g === null ? true : allowNs(g); };
      const pages = (withGroups: boolean): string[] => {
        const out: string[] = [];
        let after: string | null = null;
        for (let i = 0; i < 200; i++) {
          const p = selectPage(m.view, { prefix: '', after, limit, bytesMax: 1 << 20, values: false, decide: allow, ...(withGroups ? { groupOf: group } : {}) });
          out.push(...p.entries.map((e) => e.key), '|');
          if (!p.more) break;
          after = (p.entries[p.entries.length - 1] as { key: string }).key;
        }
        return out;
      };
      expect(pages(true)).toEqual(pages(false));
    }));
  });

  it('a wide range refused but for its last key costs a few passes, not one per window', () => {
    const data = new Map<string, Entry>();
    for (let i = 0; i < 20_000; i++) data.set(`k${String(i).padStart(6, '0')}`, { value: 'v', version: 1, epoch: 1 });
    let calls = 0;
    const p = selectPage({ data, inflight: new Map() }, {
      prefix: '', after: null, limit: 10, bytesMax: 1 << 20, values: false, decide: (k) => (calls++, k === 'k019999'),
    });
    expect(p.entries.map((e) => e.key)).toEqual(['k019999']);
    expect(p.more).toBe(false);
    expect(calls).toBe(20_000);
  });
});

describe('the scan cursor', () => {
  it('round-trips, and refuses another prefix', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 8 }), fc.uint8Array({ minLength: 1, maxLength: 1024 - 8 }), (p, tail) => {
      const prefix = Buffer.from(p);
      const key = Buffer.concat([prefix, Buffer.from(tail)]);
      const c = encodeCursor(prefix, key);
      expect(c.length).toBeLessThanOrEqual(cursorCharsMax);
      expect(decodeCursor(c, prefix).equals(key)).toBe(true);
      expect(() => decodeCursor(c, Buffer.concat([prefix, Buffer.from('x')]))).toThrow(/BAD_CURSOR/);
    }));
  });

  it('refuses anything else with BAD_REQUEST / BAD_CURSOR, never another error', () => {
    const valid = encodeCursor(Buffer.from('team/'), Buffer.from('team/plan'));
    const mutated = fc.tuple(fc.nat({ max: valid.length - 1 }), fc.string({ maxLength: 3 })).map(([at, s]) => valid.slice(0, at) + s + valid.slice(at + 1));
    fc.assert(fc.property(fc.oneof(fc.string({ maxLength: 2000 }), mutated, fc.anything()), (x) => {
      try {
        const k = decodeCursor(x, Buffer.from('team/'));
        expect(k.subarray(0, 5).toString()).toBe('team/'); // only a cursor that is valid for this prefix decodes
      } catch (err) {
        expect(err).toBeInstanceOf(EkvError);
        expect((err as EkvError).code).toBe('BAD_REQUEST');
        expect((err as EkvError).reason).toBe('BAD_CURSOR');
      }
    }));
    expect(() => decodeCursor('c1.' + 'A'.repeat(5000), Buffer.alloc(0))).toThrow(/too long/);
  });
});

/** A fake ring for the SDK's merge: S ranges of sorted keys, each answering pages of at most `l` keys. */
function fakePort(ranges: string[][], opts: { shortPages?: boolean } = {}): ClientPort & { calls: number } {
  const port = {
    calls: 0,
    floor: null,
    shards: (): number | null => null,
    learnShards: (S: number) => {
      port.shards = () => S;
    },
    prepareWrites: async () => undefined,
    get: async () => { throw new Error('unused'); },
    put: async () => { throw new Error('unused'); },
    callRange: async (shard: number, op: string, args: Record<string, unknown>) => {
      port.calls++;
      expect(op).toBe('scan');
      const keys = (ranges[shard] as string[]).filter((k) => k.startsWith(Buffer.from(args.p as Uint8Array).toString('latin1')));
      const after = args.a ? Buffer.from(args.a as Uint8Array).toString('latin1') : null;
      const rest = keys.filter((k) => after === null || k > after);
      // Short pages: a page may stop early (the byte bound) and still say "more".
      const l = opts.shortPages ? Math.max(1, Math.min(args.l as number, 1 + (rest.length % 3))) : (args.l as number);
      const page = rest.slice(0, l);
      const r: RpcResult = { e: page.map((k) => [Buffer.from(k, 'latin1'), args.v ? Buffer.from('v' + k, 'latin1') : null, 1]), m: rest.length > page.length, S: ranges.length };
      return { r, ring: 'none' };
    },
  };
  return port;
}

describe('the SDK merge over ranges (client/scan.ts)', () => {
  const rangesArb = fc.array(fc.uniqueArray(fc.string({ unit: fc.constantFrom('a', 'b', 'c', '/'), minLength: 1, maxLength: 6 }), { maxLength: 30 }), { minLength: 1, maxLength: 8 })
    .map((rs) => {
      // Every key in one range only (as hashing does).
      const seen = new Set<string>();
      return rs.map((r) => sorted(r.filter((k) => !seen.has(k) && (seen.add(k), true))));
    });

  it('scanAll yields every key once, in byte order, with values', async () => {
    await fc.assert(fc.asyncProperty(rangesArb, fc.constantFrom('', 'a', 'ab', 'c/'), fc.boolean(), async (ranges, prefix, short) => {
      const want = sorted(ranges.flat().filter((k) => k.startsWith(prefix)));
      const got: string[] = [];
      for await (const it of scanIterate(fakePort(ranges, { shortPages: short }), { prefix, values: true })) {
        expect(it.value?.toString('latin1')).toBe('v' + it.key.toString('latin1'));
        got.push(it.key.toString('latin1'));
      }
      expect(got).toEqual(want);
    }));
  });

  it('scan pages with cursors give the same keys as one pass', async () => {
    await fc.assert(fc.asyncProperty(rangesArb, fc.integer({ min: 1, max: 7 }), fc.boolean(), async (ranges, limit, short) => {
      const port = fakePort(ranges, { shortPages: short });
      const want = sorted(ranges.flat());
      const got: string[] = [];
      let cursor: string | undefined;
      for (let i = 0; i < 500; i++) {
        const p = await scanPage(port, { limit, ...(cursor ? { cursor } : {}) });
        expect(p.items.length).toBeLessThanOrEqual(limit);
        got.push(...p.items.map((x) => x.key.toString('latin1')));
        if (p.cursor === null) break;
        cursor = p.cursor;
      }
      expect(got).toEqual(want);
    }));
  });

  it('refuses a page out of order or outside the prefix (a node misbehaving)', async () => {
    const port = fakePort([['b', 'a']]);
    await expect(scanPage(port, {})).rejects.toMatchObject({ code: 'PROTOCOL' });
    const port2 = fakePort([['zz']]);
    const orig = port2.callRange;
    port2.callRange = async (s, op, a) => orig(s, op, { ...a, p: Buffer.alloc(0) });
    await expect(scanPage(port2, { prefix: 'a' })).rejects.toMatchObject({ code: 'PROTOCOL' });
  });
});

describe('the batcher (client/batch.ts)', () => {
  it('sends one mget per node for the keys routed to it, and hands each key its own answer or error', async () => {
    const sent: Array<{ node: string; op: string; n: number }> = [];
    const conn = (node: string) => ({
      call: async (op: string, args: Record<string, unknown>): Promise<RpcResult> => {
        const ks = (args.ks as Buffer[]);
        sent.push({ node, op, n: ks.length });
        return { r: ks.map((k) => (k.toString() === 'missing' ? { e: 'NOT_FOUND', m: 'no such key', n: 3 } : { v: Buffer.from(node + ':' + k.toString()), n: 1 })) };
      },
    });
    const a = conn('A');
    const b = conn('B');
    const batcher = new Batcher();
    const keys = ['k1', 'k2', 'missing', 'k4', 'k5'];
    const rs = await Promise.allSettled(keys.map((k, i) => batcher.send((i % 2 === 0 ? a : b) as never, 'get', { k: Buffer.from(k) })));
    expect(sent.sort((x, y) => x.node.localeCompare(y.node))).toEqual([{ node: 'A', op: 'mget', n: 3 }, { node: 'B', op: 'mget', n: 2 }]);
    expect(rs[0]).toMatchObject({ status: 'fulfilled', value: { n: 1 } });
    expect(Buffer.from((rs[1] as PromiseFulfilledResult<RpcResult>).value.v as Buffer).toString()).toBe('B:k2');
    expect(rs[2]).toMatchObject({ status: 'rejected', reason: { code: 'NOT_FOUND', version: 3 } });
    expect(batcher.requests).toBe(2);
  });

  it('an mget answer that ended early leaves the rest UNAVAILABLE (BATCH_FULL), which the get path retries', async () => {
    const conn = { call: async (): Promise<RpcResult> => ({ r: [{ v: Buffer.from('big'), n: 1 }] }) };
    const batcher = new Batcher();
    const rs = await Promise.allSettled(['a', 'b'].map((k) => batcher.send(conn as never, 'get', { k: Buffer.from(k) })));
    expect(rs[0]).toMatchObject({ status: 'fulfilled', value: { n: 1 } });
    expect(rs[1]).toMatchObject({ status: 'rejected', reason: { code: 'UNAVAILABLE', message: expect.stringMatching(/^BATCH_FULL/) } });
  });
});
