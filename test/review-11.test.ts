// Review 11 (hostile review of the sealed log, the blob client and the host's group commit: docs/durability.md
// "The sealed log", S1-S2, T1-T6). Both findings are in the class of review-10 F1: state derived from answered
// (or read) requests while other requests are still out.
//
// F1 (high): a failed append to the old segment with the T6 create of the next segment pipelined behind it.
//     The host poisons only the file whose write failed (T2); the create names another file and is written.
//     The log now holds a hole (the failed records) followed by later records in the newer segment; a crash
//     before resync() makes recovery refuse the log (SEAL_GAP): the node discards all its sealed state.
// F2 (high): an append group the host already started when its connection closed (the enclave was killed -9)
//     still lands, and nothing orders it before the relaunched enclave's requests on a new connection. When the
//     relaunched enclave reads the segment before that write lands, it continues the log in a new segment; the
//     dead enclave's records then land in the older one and recovery refuses the log (SEAL_REPLAYED), losing
//     the new enclave's acknowledged records with everything else.
//
// L1 (low): the blob client fails every pending request when ANY of its sockets closes. After it dropped a
//     connection itself (an unsolicited or malformed answer), requests sent meanwhile on the new connection are
//     failed by the old socket's later 'close' event although the host serves them: a resync's snapshot put is
//     reported failed and lands; its real answer then arrives unsolicited and drops the new connection too.
//
// The F tests run against the real host store (host/blob-store.ts) over its unix socket; `node:fs/promises` is
// wrapped so a test can hold or fail one synchronized write (a slow or full disk), nothing else changes.
import net from 'node:net';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { createBlobClient } from '../enclave/seal/blob-client.ts';
import { SealError } from '../enclave/seal/errors.ts';
import { encodeBlobMessage } from '../protocol/blob-wire.ts';
import { startSealEnv } from './helpers/seal-env.ts';

type Gate = { match: (path: string, bytes: number) => boolean; action: 'fail' | 'hold'; entered: boolean; release?: () => void };
const gates: { current: Gate | null } = vi.hoisted(() => ({ current: null }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const open = async (...args: Parameters<typeof real.open>): Promise<import('node:fs/promises').FileHandle> => {
    const fh = await real.open(...args);
    const path = String(args[0]);
    return new Proxy(fh, {
      get(target, prop) {
        if (prop === 'writev') {
          return async (bufs: Uint8Array[], pos?: number) => {
            const g = gates.current;
            const bytes = bufs.reduce((n, b) => n + b.length, 0);
            if (g !== null && !g.entered && g.match(path, bytes)) {
              g.entered = true;
              if (g.action === 'fail') throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
              await new Promise<void>((r) => (g.release = r));
            }
            return target.writev(bufs, pos);
          };
        }
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  };
  return { ...real, default: { ...real, open }, open };
});

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function openError(open: () => Promise<unknown>): Promise<string | null> {
  try {
    await open();
    return null;
  } catch (e) {
    return e instanceof SealError ? e.code : String(e);
  }
}

describe('review-11 F1: a failed append never leaves later records behind a hole in the next segment', () => {
  it('an append to the old segment fails (disk full), the T6 create behind it must not land: a crash then reopens', async () => {
    const env = await startSealEnv();
    try {
      const { store } = await env.open();
      for (let i = 1; i <= 5; i++) await store.append(Buffer.from(`small-${i}`));
      // Nine records of ~1 MB in one turn: eight still fit in wal-1, the ninth starts wal-e (T6): two requests.
      // The disk has no room for the 8 MB write, but has for the 1 MB one (ENOSPC on the first only).
      gates.current = { match: (p, n) => p.endsWith('wal-0000000000000001') && n > 4_000_000, action: 'fail', entered: false };
      const acks = Array.from({ length: 9 }, (_, k) => store.append(Buffer.alloc(1_000_000, 6 + k)).then(() => 'ok', (e: unknown) => (e as SealError).code));
      expect(await Promise.all(acks)).toEqual(Array(9).fill('SEAL_IO')); // nothing acknowledged: fine so far
      expect(gates.current.entered).toBe(true);
      gates.current = null;
      await sleep(50); // the host serves whatever is still queued
      // kill -9 of the enclave before its resync: an honest crash. Recovery must not refuse the log.
      // On the reviewed code: SEAL_GAP ("records 6..13 are missing"): wal-e holds record 14 behind the hole.
      expect(await openError(() => env.open())).toBeNull();
    } finally {
      gates.current = null;
      await env.cleanup();
    }
  });
});

describe('review-11 F2: a killed enclave\'s append that the host already started cannot land behind its successor', () => {
  it('the relaunched enclave reads the log while the dead one\'s write is still in progress, appends, and reopens', async () => {
    const env = await startSealEnv();
    try {
      const a = await env.open();
      for (let i = 1; i <= 3; i++) await a.store.append(Buffer.from(`a-${i}`));
      // Record 4's synchronized write is slow (the disk stalls): the host has started its group.
      gates.current = { match: (p) => p.endsWith('wal-0000000000000001'), action: 'hold', entered: false };
      const lost = a.store.append(Buffer.from('a-4')).catch(() => 'failed');
      for (let i = 0; i < 200 && !gates.current.entered; i++) await turn();
      expect(gates.current.entered).toBe(true);
      // kill -9 of the enclave: its connection closes (the host drops what it queued, but not the write started).
      env.clients[0]!.close();
      expect(await lost).toBe('failed');
      // The enclave is relaunched and opens its log while the old write is still in progress...
      const gate = gates.current;
      gates.current = null;
      const b = env.open();
      await sleep(100);
      gate.release!(); // ...and the old write lands now.
      const { store, recovered } = await b;
      // The successor acknowledges a write...
      const seq = await store.append(Buffer.from('b-1'));
      expect(seq).toBe(recovered.lastSeq + 1);
      await store.close();
      // ...which must survive a reopen. On the reviewed code: SEAL_REPLAYED (wal-1 holds the dead enclave's
      // record 4, wal-4 the successor's record 4): the whole sealed state is discarded, b-1 with it.
      let last: Buffer | undefined;
      const err = await openError(async () => {
        const c = await env.open();
        last = c.recovered.records.at(-1);
      });
      expect(err).toBeNull();
      expect(last?.toString()).toBe('b-1');
    } finally {
      gates.current = null;
      await env.cleanup();
    }
  });
});

describe('review-11 L1: the close of a connection the client dropped does not fail requests on its successor', () => {
  it('a put sent right after the client dropped a misbehaving connection is answered', async () => {
    const env = await startSealEnv();
    // The first connection goes to a host that answers a request it was never sent (id 999).
    const badPath = join(env.root, 'bad.sock');
    const bad = net.createServer((s) => s.on('data', () => s.write(encodeBlobMessage({ id: 999, ok: true }))));
    await new Promise<void>((r) => bad.listen(badPath, r));
    let n = 0;
    const c = createBlobClient({ connect: () => net.connect(n++ === 0 ? badPath : env.socketPath), timeoutMs: 5000 });
    try {
      let retry: Promise<string> | null = null;
      const first = await c.get('wal-0000000000000001').then(() => 'ok', (e: unknown) => {
        // The caller reacts at once (Persistence's resync): a new request, on a new connection.
        retry = c.put('snap-0000000000000009-0000', Buffer.from('state')).then(() => 'ok', (e2: unknown) => String((e2 as Error).message));
        return (e as SealError).code;
      });
      expect(first).toBe('SEAL_IO');
      // On the reviewed code: 'blob store connection closed' (the first socket's close event), yet the put landed.
      expect(await retry).toBe('ok');
    } finally {
      c.close();
      bad.close();
      await env.cleanup();
    }
  });
});
