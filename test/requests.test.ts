// The request-id table (exactly-once writes): a known id returns its first result, the table is
// bounded, and an id older than what it remembers is refused with EXPIRED, never taken as new.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeRequestTable, RequestTable, restoreRequestTable, wireRequestId, type RequestId } from '../enclave/cluster/requests.ts';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { EkvError } from '../protocol/errors.ts';

const session = (): Buffer => randomBytes(16);
const rid = (s: Buffer, seq: number): RequestId => ({ session: s, seq });
const put = (version: number) => ({ version, deleted: false });

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'OK';
  } catch (err) {
    return err instanceof EkvError ? err.code : String(err);
  }
}

describe('request table', () => {
  it('answers a known id with its first result, and only for the same key', () => {
    const t = new RequestTable();
    const s = session();
    expect(t.lookup(rid(s, 1), 7n)).toBeNull();
    t.add(rid(s, 1), 7n, put(3));
    expect(t.lookup(rid(s, 1), 7n)).toMatchObject({ version: 3, deleted: false });
    expect(t.lookup(rid(s, 2), 7n)).toBeNull();
    expect(t.lookup(rid(session(), 1), 7n)).toBeNull();
    expect(codeOf(() => t.lookup(rid(s, 1), 8n))).toBe('BAD_REQUEST');
  });

  it('keeps at most idsMax ids; an evicted id is EXPIRED, a newer one of that session is new', () => {
    const t = new RequestTable({ idsMax: 3, sessionsMax: 10 });
    const a = session();
    const b = session();
    for (let i = 1; i <= 4; i++) t.add(rid(a, i), 7n, put(i));
    t.add(rid(b, 1), 7n, put(1));
    expect(t.size).toBe(3);
    expect(codeOf(() => t.lookup(rid(a, 1), 7n))).toBe('EXPIRED');
    expect(codeOf(() => t.lookup(rid(a, 2), 7n))).toBe('EXPIRED');
    expect(t.lookup(rid(a, 3), 7n)).toMatchObject({ version: 3 });
    expect(t.lookup(rid(a, 5), 7n)).toBeNull();
    expect(t.lookup(rid(b, 2), 7n)).toBeNull();
  });

  it('bounds the sessions whose watermark it keeps (the oldest is forgotten first)', () => {
    const t = new RequestTable({ idsMax: 1, sessionsMax: 2 });
    const s = [session(), session(), session(), session()];
    for (const x of s) t.add(rid(x, 5), 7n, put(1));
    // s[0..2] were evicted from the ids; only the two newest watermarks (s[1], s[2]) are kept.
    expect(t.lookup(rid(s[0]!, 5), 7n)).toBeNull();
    expect(codeOf(() => t.lookup(rid(s[1]!, 5), 7n))).toBe('EXPIRED');
    expect(codeOf(() => t.lookup(rid(s[2]!, 4), 7n))).toBe('EXPIRED');
    expect(t.dump().watermarks.length).toBe(2);
  });

  it('survives the sealed snapshot (encoded, CBOR, restored)', () => {
    const t = new RequestTable({ idsMax: 2, sessionsMax: 4 });
    const s = session();
    for (let i = 1; i <= 3; i++) t.add(rid(s, i), 7n, put(i));
    t.add(rid(session(), 9), 8n, { version: 4, deleted: true });
    const u = new RequestTable({ idsMax: 2, sessionsMax: 4 });
    restoreRequestTable(u, (decodeCbor(encodeCbor(['snap', encodeRequestTable(t)])) as unknown[])[1]);
    expect(u.dump()).toEqual(t.dump());
    expect(codeOf(() => u.lookup(rid(s, 1), 7n))).toBe('EXPIRED');
    expect(u.lookup(rid(s, 3), 7n)).toMatchObject({ version: 3 });
  });

  it('validates ids from the wire', () => {
    expect(wireRequestId(undefined)).toBeNull();
    expect(wireRequestId([new Uint8Array(16), 1])?.seq).toBe(1);
    for (const bad of [[new Uint8Array(15), 1], [new Uint8Array(16), 0], [new Uint8Array(16), 1.5], [new Uint8Array(16)], 'x', [new Uint8Array(16), 2 ** 60]]) {
      expect(codeOf(() => wireRequestId(bad))).toBe('BAD_REQUEST');
    }
  });

  it('a retry (flagged on the wire) with an unknown id is EXPIRED; a known one is answered', () => {
    const t = new RequestTable();
    const s = session();
    expect(wireRequestId([s, 1, true])).toMatchObject({ seq: 1, retry: true });
    expect(wireRequestId([s, 1])?.retry).toBeUndefined();
    expect(codeOf(() => wireRequestId([s, 1, 1]))).toBe('BAD_REQUEST');
    expect(codeOf(() => t.lookup({ ...rid(s, 1), retry: true }, 7n))).toBe('EXPIRED');
    expect(t.lookup(rid(s, 1), 7n)).toBeNull();
    t.add(rid(s, 1), 7n, put(2));
    expect(t.lookup({ ...rid(s, 1), retry: true }, 7n)).toMatchObject({ version: 2 });
  });

  it('rows of the given key tags travel (bounded, newest) and merge validated, keeping known ids', () => {
    const t = new RequestTable();
    const s = session();
    for (let i = 1; i <= 5; i++) t.add(rid(s, i), i % 2 === 0 ? 7n : 8n, put(i));
    expect(t.rowsFor(new Set([7])).length).toBe(2);
    expect(t.rowsFor(new Set([8]), 2).map((r) => (r as unknown[])[1])).toEqual([3, 5]);
    const u = new RequestTable();
    u.add(rid(s, 2), 7n, put(9));
    expect(u.mergeRows(decodeCbor(encodeCbor(t.rowsFor(new Set([7, 8])))), new Set([7]))).toBe(1);
    expect(u.lookup(rid(s, 2), 7n)).toMatchObject({ version: 9 }); // known: kept
    expect(u.lookup(rid(s, 4), 7n)).toMatchObject({ version: 4 });
    expect(u.lookup(rid(s, 3), 8n)).toBeNull(); // not of the batch's keys
    expect(codeOf(() => u.mergeRows([[s, 1, -1, 1, false]], new Set([7])))).toBe('BAD_REQUEST');
    expect(codeOf(() => u.mergeRows([[s, 1, 7, 1, 'no']], new Set([7])))).toBe('BAD_REQUEST');
    expect(codeOf(() => u.mergeRows({}, new Set([7])))).toBe('BAD_REQUEST');
  });
});
