// Review 13 (hostile review of R1 outside `step` (scan marks, readOwned), the T6 cut's kept turn, the host's
// orphans and the blob client's per-socket failing). See REPORT-review13.md.
//
// F1 (low): the blob client admits requests waiting for a place in flight (more than 16 out) onto a NEW
//     connection after the old connection closed and failed the requests before them. An append called after
//     appends that failed with the connection is then sent and served: the host writes it to the segment behind
//     records that never landed (the failed requests still queued at the host are dropped unserved), so the
//     segment holds a hole. A crash before resync() makes recovery refuse the log (SEAL_GAP).
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { describe, expect, it } from 'vitest';
import { createBlobClient } from '../enclave/seal/blob-client.ts';
import { decodeBlobMessage } from '../protocol/blob-wire.ts';
import { FrameDecoder } from '../protocol/frame.ts';

class FakeSocket extends EventEmitter {
  destroyed = false;
  readonly sent: Array<Record<string, unknown>> = [];
  private readonly dec = new FrameDecoder(1 << 24);
  write(b: Buffer): boolean {
    for (const f of this.dec.push(b)) {
      const m = decodeBlobMessage(f);
      if (m) this.sent.push(m);
    }
    return true;
  }
  destroy(): this {
    if (!this.destroyed) {
      this.destroyed = true;
      queueMicrotask(() => this.emit('close'));
    }
    return this;
  }
}

describe('review-13 F1: blob client, requests admitted after their connection failed', () => {
  it('an append waiting for admission is not sent on a new connection after the appends before it failed with theirs', async () => {
    const sockets: FakeSocket[] = [];
    const client = createBlobClient({
      connect: () => {
        const s = new FakeSocket();
        sockets.push(s);
        return s as unknown as net.Socket;
      },
      timeoutMs: 60_000,
    });
    const name = 'wal-0000000000000001';
    const first: Array<Promise<unknown>> = [];
    for (let i = 0; i < 16; i++) first.push(client.append(name, Buffer.from([i]), i === 0).then(() => 'ok', (e: unknown) => e));
    // The 17th, later in call order: waits for a place.
    const late = client.append(name, Buffer.from([16]), false).then(() => 'ok', (e: unknown) => e);
    await new Promise((r) => setImmediate(r));
    expect(sockets.length).toBe(1);
    expect(sockets[0]!.sent.length).toBe(16);
    // The connection ends (the host dropped it): the 16 out are failed...
    sockets[0]!.destroy();
    const results = await Promise.all(first);
    for (const r of results) expect(r).not.toBe('ok');
    await new Promise((r) => setImmediate(r));
    // ...and the append after them must not reach the host on another connection (it would land behind a hole).
    const sentLater = sockets.slice(1).flatMap((s) => s.sent).filter((m) => m['op'] === 'append');
    expect(sentLater).toEqual([]);
    // Its caller learns it failed (never sent: a retry or a resync decides).
    const lateResult = await Promise.race([late, new Promise((r) => setTimeout(() => r('pending'), 200))]);
    expect(lateResult).not.toBe('ok');
    client.close();
  });
});
