// The host's blob store and the enclave's client of it, each facing a hostile other side.
import { existsSync, readdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createBlobClient } from '../enclave/seal/blob-client.ts';
import { SealError } from '../enclave/seal/errors.ts';
import { blobBytesMax, decodeBlobMessage, encodeBlobMessage } from '../protocol/blob-wire.ts';
import { FrameDecoder } from '../protocol/frame.ts';
import { startSealEnv, type SealEnv } from './helpers/seal-env.ts';

let env: SealEnv;
beforeEach(async () => {
  env = await startSealEnv();
});
afterEach(async () => env.cleanup());

/** Sends raw frames to the store and collects the decoded answers. */
async function raw(frames: Buffer[], answers: number): Promise<Array<Record<string, unknown>>> {
  const socket = net.connect(env.socketPath);
  const decoder = new FrameDecoder(blobBytesMax * 2);
  const out: Array<Record<string, unknown>> = [];
  return new Promise((resolve, reject) => {
    socket.on('data', (chunk) => {
      for (const f of decoder.push(chunk)) out.push(decodeBlobMessage(f)!);
      if (out.length >= answers) {
        socket.destroy();
        resolve(out);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(out));
    for (const f of frames) socket.write(f);
  });
}

describe('blob store (host)', () => {
  it('stores, lists, reads and deletes blobs', async () => {
    const c = env.client();
    await c.put('wal-01', Buffer.from('one'));
    await c.put('wal-02', Buffer.from('two'));
    await c.put('snap-01', Buffer.from('s'));
    expect(await c.list('wal-')).toEqual(['wal-01', 'wal-02']);
    expect(Buffer.from((await c.get('wal-02'))!).toString()).toBe('two');
    expect(await c.get('nothing')).toBeNull();
    await c.delete('wal-01');
    await c.delete('wal-01');
    expect(await c.list('')).toEqual(['snap-01', 'wal-02']);
  });

  it('refuses path tricks, hidden names and junk with a typed answer, and writes nothing outside its dir', async () => {
    const answers = await raw([
      encodeBlobMessage({ id: 1, op: 'put', name: '../escape', data: Buffer.from('x') }),
      encodeBlobMessage({ id: 2, op: 'put', name: '.hidden', data: Buffer.from('x') }),
      encodeBlobMessage({ id: 3, op: 'get', name: 'A'.repeat(200) }),
      encodeBlobMessage({ id: 4, op: 'nuke' } as never),
      Buffer.from([0, 0, 0, 2, 0xff, 0xff]),
    ], 5);
    expect(answers.map((a) => a['code'])).toEqual(['BAD_NAME', 'BAD_NAME', 'BAD_NAME', 'BAD_REQUEST', 'BAD_REQUEST']);
    expect(existsSync(join(env.root, 'escape'))).toBe(false);
    expect(readdirSync(env.dir)).toEqual([]);
  });

  it('closes a connection that announces an oversized frame, without allocating it', async () => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(0xffff_fff0);
    const answers = await raw([head], 1);
    expect(answers).toEqual([]);
  });
});

describe('blob client (enclave)', () => {
  it('turns a lying store into SEAL_IO: unsolicited ids, wrong shapes, names outside the prefix', async () => {
    const fake = net.createServer((s) => {
      const d = new FrameDecoder(1 << 20);
      s.on('data', (chunk) => {
        for (const f of d.push(chunk)) {
          const req = decodeBlobMessage(f)!;
          if (req['op'] === 'list') s.write(encodeBlobMessage({ id: req['id'] as number, ok: true, names: ['snap-1', '../x'] }));
          else if (req['op'] === 'get') s.write(encodeBlobMessage({ id: req['id'] as number, ok: true, data: 'not bytes' as never }));
          else s.write(encodeBlobMessage({ id: 999, ok: true }));
        }
      });
    });
    const path = join(env.root, 'fake.sock');
    await new Promise<void>((r) => fake.listen(path, r));
    const c = createBlobClient({ connect: () => net.connect(path), timeoutMs: 2000 });
    try {
      await expect(c.list('wal-')).rejects.toMatchObject({ code: 'SEAL_IO' });
      await expect(c.get('wal-1')).rejects.toMatchObject({ code: 'SEAL_IO' });
      await expect(c.put('wal-1', Buffer.from('x'))).rejects.toBeInstanceOf(SealError);
    } finally {
      c.close();
      await new Promise((r) => fake.close(r));
    }
  });

  it('times out against a silent store', async () => {
    const silent = net.createServer(() => undefined);
    const path = join(env.root, 'silent.sock');
    await new Promise<void>((r) => silent.listen(path, r));
    const c = createBlobClient({ connect: () => net.connect(path), timeoutMs: 200 });
    try {
      await expect(c.get('wal-1')).rejects.toMatchObject({ code: 'SEAL_IO' });
    } finally {
      c.close();
      silent.close();
    }
  });
});
