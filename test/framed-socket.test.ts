// FramedSocket judges each frame by the limit in force when it is read (issue 16, item 4): a client
// whose first request (a big put) arrives in the same chunk as its handshake finish is served, not
// closed for exceeding the 24 KiB handshake limit. Deterministic: the client's finish and request
// are held back and delivered to the server as one chunk.
import { randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import { encodeFrame } from '../protocol/frame.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { acceptHandshake, connectHandshake, type VerifyDoc } from '../protocol/handshake.ts';
import { generateIdentity } from '../protocol/keys.ts';

/** Client and server streams; the client's writes after its first are held until release(), then arrive as one chunk. */
function heldPair(): { client: Duplex; server: Duplex; release(): void; held(): number } {
  const held: Buffer[] = [];
  let writes = 0;
  const server = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
  const client = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      if (writes++ === 0) server.push(chunk);
      else held.push(chunk);
      cb();
    },
  });
  // The server's writes go straight to the client.
  server._write = (chunk: Buffer, _enc, cb) => {
    client.push(chunk);
    cb();
  };
  return { client, server, release: () => server.push(Buffer.concat(held.splice(0))), held: () => held.length };
}

const fakeAttest = (nonce: Uint8Array, publicKey: Uint8Array) => Promise.resolve(encodeCbor({ nonce, key: publicKey }));
const fakeVerify: VerifyDoc = async (doc) => {
  const d = decodeCbor(doc) as { key: Uint8Array };
  return { publicKey: d.key, pcrs: new Map(), leafNotAfter: Date.now() + 3_600_000, timestamp: Date.now(), moduleId: 'fake' };
};

describe('FramedSocket: the first request in the same chunk as the finish', () => {
  it('serves a 300 KiB request that arrives glued to the handshake finish', async () => {
    const pair = heldPair();
    const cfs = new FramedSocket(pair.client, handshakeBytesMax);
    const sfs = new FramedSocket(pair.server, handshakeBytesMax);
    const accepted = acceptHandshake(sfs, {
      identity: generateIdentity(),
      attest: fakeAttest,
      verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers')),
      ring: null,
      verifyPrincipal: () => false,
      timeoutMs: 5000,
    });
    const { session } = await connectHandshake(cfs, { mode: 'client', verifyServer: fakeVerify, timeoutMs: 5000 });
    const value = randomBytes(300 * 1024);
    session.send({ id: 1, op: 'put', req: { k: Buffer.from('big'), v: value } });
    await tick();
    await tick();
    expect(pair.held()).toBe(2); // the finish and the sealed request, not yet delivered
    pair.release();

    const result = await accepted;
    if (result.kind !== 'session') throw new Error('expected a session');
    const got = await new Promise<unknown>((resolve, reject) => result.session.start(resolve, reject));
    const msg = got as { id: number; op: string; req: { v: Uint8Array } };
    expect(msg.op).toBe('put');
    expect(Buffer.from(msg.req.v).equals(value)).toBe(true);
  });

  it('still refuses a frame over the handshake limit while the handshake reads', async () => {
    const pair = heldPair();
    const sfs = new FramedSocket(pair.server, handshakeBytesMax);
    const first = sfs.next(5000);
    const big = Buffer.alloc(handshakeBytesMax + 1);
    pair.client.write(encodeFrame(big));
    await expect(first).rejects.toMatchObject({ code: 'FRAME_TOO_LARGE' });
  });

  it('leaves bytes nobody reads undecoded and stops reading from the socket', async () => {
    const pair = heldPair();
    const sfs = new FramedSocket(pair.server, handshakeBytesMax);
    pair.client.write(Buffer.concat([encodeFrame(Buffer.from('a')), encodeFrame(Buffer.from('b'))]));
    await tick();
    expect(pair.server.isPaused()).toBe(true);
    expect((await sfs.next(1000)).toString()).toBe('a');
    expect((await sfs.next(1000)).toString()).toBe('b');
  });
});
