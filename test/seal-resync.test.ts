// The sealed log after a failed blob write (issue 11: the host proxy killed and restarted): the store
// fails closed (refuses appends), then resync() seals the caller's whole state as a snapshot and the
// log continues, whether the failed segment never reached the disk, reached it with its answer lost,
// or reached it late, after the resync. Every reopen must recover exactly what was durable.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SealError } from '../enclave/seal/errors.ts';
import { SealedStore } from '../enclave/seal/log.ts';
import { FakeBlobs, type PutFault } from './helpers/fake-blobs.ts';

const dataKey = randomBytes(32);
const nodeId = randomBytes(32);
const rec = (s: string): Buffer => Buffer.from(s);

async function open(blobs: FakeBlobs) {
  return SealedStore.open({ blobs, dataKey, nodeId });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof SealError ? err.code : String(err);
  }
}

async function failThenResync(fault: PutFault) {
  const blobs = new FakeBlobs();
  const { store } = await open(blobs);
  await store.append(rec('a'));
  await store.append(rec('b'));
  blobs.fault = fault;
  expect(await code(store.append(rec('lost')))).toBe('SEAL_IO');
  expect(store.healthy).toBe(false);
  // Fails closed: nothing is accepted (or acknowledged) until the state is sealed again.
  expect(await code(store.append(rec('refused')))).toBe('SEAL_IO');
  expect(await code(store.resync(rec('state: an older attempt')))).toBe('SEAL_IO'); // the host still fails
  expect(store.healthy).toBe(false);
  blobs.fault = 'ok';
  await store.resync(rec('state: a b'));
  expect(store.healthy).toBe(true);
  await store.append(rec('c'));
  await store.append(rec('d'));
  return { blobs, store };
}

describe('sealed log: fail closed, then resync', () => {
  for (const fault of ['fail', 'land-then-fail', 'hold'] as const) {
    it(`a segment write that ${fault === 'fail' ? 'failed' : fault === 'hold' ? 'lands late' : 'landed but whose answer was lost'}: refused until resync, then nothing durable is lost`, async () => {
      const { blobs, store } = await failThenResync(fault);
      // The host writes the failed segment and the failed attempt's snapshot after all: neither may win.
      if (fault === 'hold') blobs.landHeld();
      const { recovered } = await open(blobs);
      expect(recovered.snapshot?.toString()).toBe('state: a b');
      expect(recovered.records.map(String)).toEqual(['c', 'd']);
      expect(recovered.lastSeq).toBe(store.stats().lastSeq);
      // And the log keeps working across a further reopen (the chain continues after the snapshot).
      const again = await open(blobs);
      await again.store.append(rec('e'));
      expect((await open(blobs)).recovered.records.map(String)).toEqual(['c', 'd', 'e']);
    });
  }

  it('without resync the store stays broken (the behaviour issue 11 reported)', async () => {
    const blobs = new FakeBlobs();
    const { store } = await open(blobs);
    blobs.fault = 'fail';
    expect(await code(store.append(rec('x')))).toBe('SEAL_IO');
    blobs.fault = 'ok';
    expect(await code(store.append(rec('y')))).toBe('SEAL_IO');
  });

  it('a closed store is not revived', async () => {
    const blobs = new FakeBlobs();
    const { store } = await open(blobs);
    await store.close();
    expect(await code(store.resync(rec('s')))).toBe('SEAL_CLOSED');
  });
});
