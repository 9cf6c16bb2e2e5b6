// Snapshots off the request path (docs/durability.md "Snapshots off the request path", S1 and S2): the state and
// the log position are taken at one moment, the encoding and sealing run a slice at a time while appends
// continue, and a snapshot sealed at an older position never replaces a newer one.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeLogRecord } from '../enclave/cluster/data-wire.ts';
import type { ClientResult, LogRecord } from '../enclave/data/index.ts';
import { gcmTagBytes, nodeTagBytes } from '../enclave/seal/constants.ts';
import { SealedStore } from '../enclave/seal/log.ts';
import { openSnapshotChunk, sealSnapshot, sealSnapshotSlices, snapshotSliceBytes } from '../enclave/seal/snapshot.ts';
import { RetireNet, retireMembers, startedNet } from './helpers/retire-net.ts';
import { startSealEnv, type SealEnv } from './helpers/seal-env.ts';

let env: SealEnv;
beforeEach(async () => {
  env = await startSealEnv();
});
afterEach(async () => env.cleanup());

const rec = (i: number): Buffer => Buffer.from(`put key-${i} = secret-value-${i}`);

async function appendEach(store: SealedStore, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) await store.append(rec(i));
}

describe('S1: a snapshot sealed later sits at the position its state was taken at', () => {
  it('appends made while it is sealed come back after it, in order, and nothing before it', async () => {
    const { store } = await env.open();
    await appendEach(store, 0, 5);
    const at = store.snapshotPoint();
    expect(at.seq).toBe(5);
    // Larger than one slice and than one chunk (4 MiB): several turns and several chunks.
    const state = Buffer.alloc(9 * 1024 * 1024 + 17, 3);
    let i = 5;
    let turns = 0;
    // Every turn between slices, the "event loop" appends another record, as client requests would.
    await store.writeSnapshotAt(at, state, async () => {
      turns++;
      await store.append(rec(i++));
    });
    expect(turns).toBeGreaterThanOrEqual(Math.floor(state.length / snapshotSliceBytes));
    await appendEach(store, i, 2);
    await store.close();
    const { recovered } = await env.open();
    expect(recovered.snapshotSeq).toBe(5);
    expect(recovered.snapshot?.equals(state)).toBe(true);
    expect(recovered.records.map(String)).toEqual(Array.from({ length: i + 2 - 5 }, (_, k) => String(rec(5 + k))));
    expect(recovered.lastSeq).toBe(i + 2);
  });

  it('the sliced sealing gives chunks that open to the same state as the one-step sealing', () => {
    const key = Buffer.alloc(32, 9);
    const nodeTag = Buffer.alloc(nodeTagBytes, 1);
    const chainTag = Buffer.alloc(gcmTagBytes, 2);
    for (const size of [0, 1, snapshotSliceBytes, snapshotSliceBytes + 1, 4 * 1024 * 1024 + 5]) {
      const state = Buffer.alloc(size);
      for (let k = 0; k < size; k += 4093) state[k] = k & 0xff;
      const steps = sealSnapshotSlices(key, nodeTag, 7, chainTag, state, 1000);
      let r = steps.next();
      while (r.done !== true) r = steps.next();
      const sliced = r.value;
      const whole = sealSnapshot(key, nodeTag, 7, chainTag, state);
      expect(sliced.map((c) => c.length)).toEqual(whole.map((c) => c.length));
      const open = (chunks: Buffer[]): Buffer => Buffer.concat(chunks.map((c, n) => openSnapshotChunk(key, nodeTag, c, `c${n}`).plaintext));
      expect(open(sliced).equals(state)).toBe(true);
    }
  });
});

describe('S2: a snapshot at an older position never replaces a newer one', () => {
  it('a slow snapshot finishing after a newer one stored is dropped; recovery has the newer one', async () => {
    const { store } = await env.open();
    await appendEach(store, 0, 3);
    const old = store.snapshotPoint();
    await appendEach(store, 3, 4);
    await store.writeSnapshot(Buffer.from('state after 7'));
    await store.writeSnapshotAt(old, Buffer.from('state after 3'));
    await appendEach(store, 7, 1);
    await store.close();
    const { recovered } = await env.open();
    expect(String(recovered.snapshot)).toBe('state after 7');
    expect(recovered.snapshotSeq).toBe(7);
    expect(recovered.records.map(String)).toEqual([String(rec(7))]);
  });

  it('queued in call order: an older snapshot still sealing when a newer one is asked for is stored first, then replaced', async () => {
    const { store } = await env.open();
    await appendEach(store, 0, 3);
    const old = store.snapshotPoint();
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    // The older snapshot waits in its first turn until the newer one is queued and stored.
    const slow = store.writeSnapshotAt(old, Buffer.alloc(snapshotSliceBytes * 2, 1), () => gate);
    await appendEach(store, 3, 4);
    const newer = store.writeSnapshotAt(store.snapshotPoint(), Buffer.from('state after 7'));
    release();
    await Promise.all([slow, newer]);
    await store.close();
    const { recovered } = await env.open();
    expect(String(recovered.snapshot)).toBe('state after 7');
    expect(recovered.records).toEqual([]);
    expect(recovered.lastSeq).toBe(7);
  });
});

describe('S1: the records a snapshot is taken from are the core\'s copy', () => {
  it('encode the same after the core has moved on (writes, deletes, expiries, sessions, a new configuration)', () => {
    const net: RetireNet = startedNet(retireMembers(['a', 'b', 'c', 'd']));
    const owner = net.owner() as string;
    const open = net.ask(owner, { kind: 'open', shard: 0, principal: 'p' }, 30) as ClientResult & { session: number };
    expect(open).toMatchObject({ ok: true, kind: 'open' });
    let seq = 0;
    const put = (to: string, key: string, value: string, ttl: number | null = null): ClientResult | undefined =>
      net.ask(to, { kind: 'put', key, value, ifVersion: null, session: open.session, seq: ++seq, floor: seq, principal: 'p', ttl }, 30);
    for (let k = 0; k < 6; k++) expect(put(owner, `k${k}`, `v${k}`, k === 5 ? 40 : null)).toMatchObject({ ok: true });
    const taken: LogRecord[] = net.node(owner).durableRecords();
    const before = taken.map((r) => encodeLogRecord(r));
    expect(taken.some((r) => r.t === 'snap' && r.data.size === 6)).toBe(true);
    // The core moves on: the same keys rewritten, one deleted, one expiring, the session's table growing.
    for (let k = 0; k < 5; k++) expect(put(owner, `k${k}`, `w${k}`)).toMatchObject({ ok: true });
    expect(net.ask(owner, { kind: 'del', key: 'k0', ifVersion: null, session: open.session, seq: ++seq, floor: seq, principal: 'p' }, 30)).toMatchObject({ ok: true });
    net.run(100);
    // A member is lost: the range moves to a new configuration (and epoch).
    const other = ['a', 'b', 'c'].find((n) => n !== owner) as string;
    net.down.add(other);
    net.run(400);
    const owner2 = net.owner() as string;
    expect(net.node(owner2).configOf(0)?.epoch).toBeGreaterThan((taken.find((r) => r.t === 'cfg') as { config: { epoch: number } }).config.epoch);
    expect(taken.map((r) => encodeLogRecord(r))).toEqual(before);
  });
});
