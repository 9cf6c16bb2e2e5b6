// The data core's bytes (enclave/cluster/data-wire.ts): batches of peer messages and log records round-trip,
// hostile batches are refused with typed errors, and chunk reassembly is bounded and order-checked.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encodeCbor } from '../protocol/cbor.ts';
import {
  chunksOf, dataChunkBytes, dataMessageBytesMax, decodeLogRecord, decodeLogRecords, decodePeerBatch, encodeLogGroup, encodeLogRecord, encodePeerBatch, Reassembler,
  reassemblyBytesMax,
} from '../enclave/cluster/data-wire.ts';
import type { LogRecord, Member, PeerBody } from '../enclave/data/index.ts';

const m: Member = { name: 'ab'.repeat(32), ring: (1n << 255n) + 7n, inc: 0 };
const ballot = { round: 3, name: m.name, inc: 0 };
const config = { shard: 2, epoch: 4, members: [m] };
const value = randomBytes(300_000).toString('latin1');
const sessions = { next: 3, clock: 9, table: new Map([[2 * 2 ** 21 + 7, { owner: 'kabc', floor: 1, used: 9, results: new Map([[1, { result: { ok: true as const, version: 5, existed: true }, digest: '0123456789abcdef0123456789abcdef' }]]) }]]) };

describe('data wire', () => {
  it('round-trips a batch of peer messages (bigints, maps, binary values) and log records', () => {
    const batch: PeerBody[] = [
      { t: 'hb', leaving: false, configs: [config] },
      { t: 'install', base: config, ballot, value: { ...config, epoch: 5 }, data: new Map([['k\u00ff', { value, version: 2, epoch: 4 }]]), sessions },
      { t: 'leaseGrant', shard: 2, epoch: 4, t0: 12345 },
    ];
    const bytes = encodePeerBatch(batch);
    expect(bytes.length).toBeGreaterThan(dataChunkBytes); // would be chunked on the wire
    expect(decodePeerBatch(bytes, 64)).toEqual(batch);
    const records: LogRecord[] = [
      { t: 'cfg', shard: 2, config },
      { t: 'acc', shard: 2, epoch: 4, promised: ballot, accepted: { ballot, value: { ...config, epoch: 5 } } },
      { t: 'snap', shard: 2, instance: 4, ballot, synced: true, data: new Map([['x', { value: null, version: 3, epoch: 4 }]]), sessions },
      { t: 'w', shard: 2, epoch: 4, op: { key: 'x', entry: { value, version: 4, epoch: 4 }, req: { session: 2, seq: 1, floor: 1, result: { ok: false, code: 'RANGE_FULL', version: 3 }, digest: 'fedcba9876543210fedcba9876543210', used: 10 }, open: null } },
      { t: 'mark', shard: 0, pos: 123, inc: 2 },
      { t: 'mark', shard: 0, pos: 7, inc: 2, boot: 123456 },
      { t: 'wit', shard: 0, w: [['a'.repeat(64), 99, 1, 77, 78, [76]]] },
    ];
    for (const r of records) expect(decodeLogRecord(encodeLogRecord(r), 64)).toEqual(r);
    // A driver batch sealed as one record: read back whole, in order; a lone record reads as before.
    const group = encodeLogGroup(records.map(encodeLogRecord));
    expect(decodeLogRecords(group, 64)).toEqual(records);
    expect(decodeLogRecords(encodeLogRecord(records[0] as LogRecord), 64)).toEqual([records[0]]);
    // A reader that takes a record's bytes as one LogRecord (every image before grouping) refuses a group:
    // a downgrade fails to load instead of skipping the group and coming up with a hole in its log.
    expect(() => decodeLogRecord(group, 64)).toThrow();
  });

  it('refuses hostile batches with a typed error', () => {
    const bad = [
      encodeCbor([]), // empty batch
      encodeCbor({ t: 'hb' }), // not an array
      encodeCbor([{ t: 'nope' }]),
      encodeCbor([{ t: 'leaseReq', shard: 64, epoch: 1, t0: 0 }]), // range outside the image's
      encodeCbor([{ t: 'hb', leaving: false, configs: [{ shard: 0, epoch: 1, members: [{ name: 'a', ring: Buffer.alloc(31), inc: 0 }] }] }]),
    ];
    for (const b of bad) expect(() => decodePeerBatch(b, 64)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(() => decodePeerBatch(Buffer.from([0xff, 0x00]), 64)).toThrow(expect.objectContaining({ code: 'PROTOCOL' })); // not CBOR
  });

  it('reassembles chunks in order only, and bounds what it holds', () => {
    const msg = randomBytes(dataChunkBytes * 2 + 5);
    const parts = chunksOf(msg);
    expect(parts).toHaveLength(3);
    const r = new Reassembler();
    expect(r.add('p', 1, 0, 3, parts[0] as Buffer)).toBeNull();
    expect(r.add('p', 1, 1, 3, parts[1] as Buffer)).toBeNull();
    expect(r.add('p', 1, 2, 3, parts[2] as Buffer)?.equals(msg)).toBe(true);
    expect(r.bufferedBytes).toBe(0);
    // A gap drops the partial message (the core resends); a chunk of another message starts over.
    expect(r.add('p', 2, 0, 3, parts[0] as Buffer)).toBeNull();
    expect(r.add('p', 2, 2, 3, parts[2] as Buffer)).toBeNull();
    expect(r.bufferedBytes).toBe(0);
    // Headers and sizes are checked before anything is kept.
    expect(() => r.add('p', 3, 0, Math.ceil(dataMessageBytesMax / dataChunkBytes) + 1, parts[0] as Buffer)).toThrow(/chunk header/);
    expect(() => r.add('p', 3, 5, 3, parts[0] as Buffer)).toThrow(/chunk header/);
    expect(() => r.add('p', 3, 0, 3, Buffer.alloc(dataChunkBytes + 1))).toThrow(/chunk size/);
    // In total: many senders' partial messages stop at the bound.
    const big = Buffer.alloc(dataChunkBytes);
    const count = Math.ceil(dataMessageBytesMax / dataChunkBytes);
    let refused = 0;
    for (let s = 0; s < 4 && refused === 0; s++) {
      for (let i = 0; i < count - 1; i++) {
        try {
          r.add(`s${s}`, 9, i, count, big);
        } catch {
          refused++;
          break;
        }
      }
    }
    expect(refused).toBe(1);
    expect(r.bufferedBytes).toBeLessThanOrEqual(reassemblyBytesMax);
  });
});
