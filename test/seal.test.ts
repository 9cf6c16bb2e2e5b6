// The sealed log through the real blob store: recovery of everything acknowledged, compaction by
// snapshots, and a host that flips, truncates, drops, reorders, swaps or replays blobs on disk.
import { copyFileSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendHeaderBytes } from '../enclave/seal/constants.ts';
import { SealError, type SealErrorCode } from '../enclave/seal/errors.ts';
import { SealedStore } from '../enclave/seal/log.ts';
import { startSealEnv, type SealEnv } from './helpers/seal-env.ts';

let env: SealEnv;
beforeEach(async () => {
  env = await startSealEnv();
});
afterEach(async () => env.cleanup());

const rec = (i: number): Buffer => Buffer.from(`put key-${i} = secret-value-${i}`);
const files = (prefix: string): string[] => readdirSync(env.dir).filter((n) => n.startsWith(prefix)).sort();

/** Appends n records one by one (awaited): each its own append request, all in the store's current segment. */
async function appendEach(store: SealedStore, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) await store.append(rec(i));
}

/** Appends n records, each through a store opened for it: every open starts a new segment (docs/durability.md T6). */
async function appendApart(from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) {
    const { store } = await env.open();
    await store.append(rec(i));
    await store.close();
  }
}

async function openCode(): Promise<SealErrorCode | 'OK'> {
  try {
    await env.open();
    return 'OK';
  } catch (err) {
    if (err instanceof SealError) return err.code;
    throw err;
  }
}

describe('sealed log', () => {
  it('recovers every acknowledged record after a reopen, and continues the chain', async () => {
    const { store, recovered } = await env.open();
    expect(recovered).toEqual({ snapshot: null, snapshotSeq: 0, records: [], lastSeq: 0 });
    await Promise.all(Array.from({ length: 500 }, (_, i) => store.append(rec(i))));
    await appendEach(store, 500, 3);
    await store.close();
    const again = await env.open();
    expect(again.recovered.lastSeq).toBe(503);
    expect(again.recovered.records.map(String)).toEqual(Array.from({ length: 503 }, (_, i) => String(rec(i))));
    await again.store.append(rec(503));
    await again.store.close();
    expect((await env.open()).recovered.lastSeq).toBe(504);
  });

  it('group-commits concurrent appends into few segments', async () => {
    const { store } = await env.open();
    await Promise.all(Array.from({ length: 5000 }, (_, i) => store.append(rec(i))));
    expect(store.stats().segments).toBeLessThanOrEqual(3);
    expect(store.stats().durableSeq).toBe(5000);
  });

  it('compacts with snapshots and recovers snapshot + tail', async () => {
    const { store } = await env.open();
    await appendEach(store, 0, 5);
    await store.writeSnapshot(Buffer.from('state after 5'));
    expect(files('wal-')).toHaveLength(1); // the segment appends go to is kept (T6)
    await appendEach(store, 5, 2);
    await store.writeSnapshot(Buffer.from('state after 7'));
    await appendEach(store, 7, 2);
    await store.close();
    expect(files('snap-')).toHaveLength(1);
    const { recovered } = await env.open();
    expect(String(recovered.snapshot)).toBe('state after 7');
    expect(recovered.snapshotSeq).toBe(7);
    expect(recovered.records.map(String)).toEqual([String(rec(7)), String(rec(8))]);
  });

  it('splits a large snapshot into chunks and ignores an incomplete newer snapshot (crash while writing)', async () => {
    const { store } = await env.open();
    await appendEach(store, 0, 2);
    const big = Buffer.alloc(9 * 1024 * 1024, 7);
    await store.writeSnapshot(big);
    expect(files('snap-')).toHaveLength(3);
    await appendEach(store, 2, 2);
    await store.close();
    const before = new Map(readdirSync(env.dir).map((n) => [n, readFileSync(join(env.dir, n))]));
    const second = await env.open();
    expect(second.recovered.snapshot?.equals(big)).toBe(true);
    expect(second.recovered.records.map(String)).toEqual([String(rec(2)), String(rec(3))]);
    await second.store.writeSnapshot(Buffer.alloc(9 * 1024 * 1024, 8));
    await second.store.close();
    // Crash: only the first chunk of the newer snapshot reached disk, nothing was compacted.
    const newer = files('snap-').filter((n) => !before.has(n));
    for (const n of newer.slice(1)) unlinkSync(join(env.dir, n));
    for (const [n, bytes] of before) writeFileSync(join(env.dir, n), bytes);
    const { recovered } = await env.open();
    expect(recovered.snapshot?.equals(big)).toBe(true);
    expect(recovered.snapshotSeq).toBe(2);
    expect(recovered.lastSeq).toBe(4);
  });

  it('keeps plaintext out of the host directory', async () => {
    const { store } = await env.open();
    await Promise.all(Array.from({ length: 200 }, (_, i) => store.append(rec(i))));
    await store.writeSnapshot(Buffer.from('snapshot secret-value-42'));
    await appendEach(store, 200, 3);
    await store.close();
    for (const name of readdirSync(env.dir)) {
      const bytes = readFileSync(join(env.dir, name));
      expect(bytes.includes('secret-value')).toBe(false);
      expect(bytes.includes('key-1')).toBe(false);
      expect(bytes.includes(env.dataKey)).toBe(false);
      expect(bytes.includes(env.dataKey.toString('hex'))).toBe(false);
    }
  });

  it('rollback: the host may serve an older genuine state; the caller detects it against the ring', async () => {
    await appendApart(0, 4);
    unlinkSync(join(env.dir, files('wal-').at(-1)!));
    const { recovered } = await env.open();
    expect(recovered.lastSeq).toBe(3);
    expect(() => SealedStore.assertNotRolledBack(recovered, 4)).toThrow(expect.objectContaining({ code: 'SEAL_ROLLBACK' }));
    expect(() => SealedStore.assertNotRolledBack(recovered, 3)).not.toThrow();
  });
});

describe('sealed log against a hostile host', () => {
  beforeEach(async () => {
    await appendApart(0, 4); // wal-1 .. wal-4, one record each
  });
  const seg = (i: number): string => join(env.dir, files('wal-')[i]!);

  it('a flipped bit in a record: SEAL_CORRUPT', async () => {
    const bytes = readFileSync(seg(1));
    bytes[bytes.length - 20]! ^= 0x01;
    writeFileSync(seg(1), bytes);
    expect(await openCode()).toBe('SEAL_CORRUPT');
  });

  it('a flipped sequence number in a record header: detected', async () => {
    const bytes = readFileSync(seg(1));
    bytes[appendHeaderBytes + 7]! ^= 0x01; // low byte of the record's seq
    writeFileSync(seg(1), bytes);
    expect(['SEAL_REORDERED', 'SEAL_GAP', 'SEAL_CORRUPT']).toContain(await openCode());
  });

  it('a truncated segment: SEAL_TRUNCATED', async () => {
    const bytes = readFileSync(seg(2));
    writeFileSync(seg(2), bytes.subarray(0, bytes.length - 9));
    expect(await openCode()).toBe('SEAL_TRUNCATED');
  });

  it('a dropped segment in the middle: SEAL_GAP; the first one: SEAL_GAP', async () => {
    const first = readFileSync(seg(0));
    unlinkSync(seg(1));
    expect(await openCode()).toBe('SEAL_GAP');
    unlinkSync(seg(0));
    expect(await openCode()).toBe('SEAL_GAP');
    expect(first.length).toBeGreaterThan(0);
  });

  it('swapped segments (each under the other\'s name): SEAL_REORDERED', async () => {
    const [a, b] = [seg(1), seg(2)];
    renameSync(a, `${a}.x`);
    renameSync(b, a);
    renameSync(`${a}.x`, b);
    expect(await openCode()).toBe('SEAL_REORDERED');
  });

  it('a segment replayed under a later name: SEAL_REORDERED', async () => {
    copyFileSync(seg(0), seg(3));
    expect(await openCode()).toBe('SEAL_REORDERED');
  });

  it('a genuine segment from another history (after a rollback) mixed in: SEAL_REPLAYED', async () => {
    const oldThird = readFileSync(seg(2));
    unlinkSync(seg(3));
    unlinkSync(seg(2)); // the host rolls back to 2 records
    await appendApart(100, 2); // a new record 3 and 4
    writeFileSync(seg(2), oldThird); // and then serves the old record 3 before the new 4
    expect(await openCode()).toBe('SEAL_REPLAYED');
  });

  it('another node\'s blobs: SEAL_FOREIGN', async () => {
    const other = await startSealEnv();
    try {
      const { store } = await SealedStore.open({ blobs: other.client(), dataKey: env.dataKey, nodeId: Buffer.from('other node') });
      await appendEach(store, 0, 1);
      await store.close();
      copyFileSync(join(other.dir, readdirSync(other.dir).find((n) => n.startsWith('wal-'))!), join(env.dir, 'wal-0000000000000005'));
      expect(await openCode()).toBe('SEAL_FOREIGN');
    } finally {
      await other.cleanup();
    }
  });

  it('a flipped snapshot chunk: SEAL_CORRUPT (never a fallback to stale data)', async () => {
    const { store } = await env.open();
    await store.writeSnapshot(Buffer.from('state'));
    await store.close();
    const snap = join(env.dir, files('snap-')[0]!);
    const bytes = readFileSync(snap);
    bytes[bytes.length - 1]! ^= 0x80;
    writeFileSync(snap, bytes);
    expect(await openCode()).toBe('SEAL_CORRUPT');
  });

  it('a wrong data key cannot open anything', async () => {
    env.dataKey = Buffer.alloc(32, 1);
    expect(await openCode()).toBe('SEAL_CORRUPT');
  });
});
