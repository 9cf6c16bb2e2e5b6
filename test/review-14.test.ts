// Review 14: the secure channel, admission and authorization (hostile client / host).
//
// F1: the enclave's answers to a client session go into the socket's write buffer without a bound. A client
//     (anonymous, or any principal with read rights) that sends requests and never reads the answers makes the
//     enclave buffer every answer in its own memory (the host relay pipes with back-pressure, so the bytes
//     stay in the enclave). A 20-byte `get` of a 512 KiB value is a 26,000x amplification.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { connectHandshake, type VerifyDoc } from '../protocol/handshake.ts';
import { generateIdentity, verifyEd25519 } from '../protocol/keys.ts';
import { EnclaveServer } from '../enclave/server.ts';
import { RpcClient } from '../protocol/rpc.ts';

const fakeAttest = (nonce: Uint8Array, publicKey: Uint8Array) => Promise.resolve(encodeCbor({ fake: 1, nonce, key: publicKey }));
const fakeVerify: VerifyDoc = async (doc, nonce) => {
  const d = decodeCbor(doc) as { nonce?: Uint8Array; key?: Uint8Array | null };
  if (!(d.nonce instanceof Uint8Array) || !Buffer.from(d.nonce).equals(Buffer.from(nonce))) throw new EkvError('UNATTESTED', 'nonce differs');
  return { publicKey: d.key ?? null, pcrs: new Map(), leafNotAfter: Date.now() + 3_600_000, timestamp: Date.now(), moduleId: 'fake' };
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('review-14 F1: a client that never reads its answers cannot grow the enclave\'s memory without bound', () => {
  let dir: string;
  let server: EnclaveServer;
  let path: string;
  const answerBytes = 256 * 1024;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ekv-rev14-'));
    path = join(dir, 'enclave.sock');
    // The handler stands in for a `get` of a large value the caller may read (or any answer: status, errors).
    server = new EnclaveServer(
      { identity: generateIdentity(), attest: fakeAttest, verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers')), verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s), ring: null },
      () => ({ v: Buffer.alloc(answerBytes, 7) }),
      pino({ level: 'silent' }),
    );
    await server.listen(path);
  });

  afterAll(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('400 gets of 256 KiB (100 MiB of answers) never read: the enclave buffers at most a bounded amount for the connection', async () => {
    const socket = net.connect(path);
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('connect', r));
    const fs = new FramedSocket(socket, handshakeBytesMax);
    const { session } = await connectHandshake(fs, { mode: 'client', verifyServer: fakeVerify, timeoutMs: 2000 });
    socket.pause(); // the attacker never reads again
    const sockets = (server as unknown as { sockets: Set<net.Socket> }).sockets;
    let peak = 0;
    const sampler = setInterval(() => {
      for (const s of sockets) peak = Math.max(peak, s.writableLength);
    }, 2);
    try {
      for (let i = 1; i <= 400; i++) session.send({ i, o: 'get', k: Buffer.from('k') });
      await sleep(1500);
      for (const s of sockets) peak = Math.max(peak, s.writableLength);
    } finally {
      clearInterval(sampler);
      socket.destroy();
    }
    // Before the fix: ~100 MiB held in the enclave's write buffer for one connection (measured 104,869,290).
    expect(peak).toBeLessThanOrEqual(64 * 1024 * 1024); // clientWriteBufferBytesMax
    // And the enclave dropped the session that would not read.
    expect(sockets.size).toBe(0);
  });

  it('control: a client that reads its answers gets 50 MiB of them, asked for at once, on one session', async () => {
    const socket = net.connect(path);
    socket.on('error', () => undefined);
    await new Promise((r) => socket.once('connect', r));
    const fs = new FramedSocket(socket, handshakeBytesMax);
    const { session } = await connectHandshake(fs, { mode: 'client', verifyServer: fakeVerify, timeoutMs: 2000 });
    const rpc = new RpcClient(session);
    try {
      const answers = await Promise.all(Array.from({ length: 200 }, () => rpc.call('get', { k: Buffer.from('k') }, 20_000)));
      expect(answers.every((a) => a.v instanceof Uint8Array && a.v.length === answerBytes)).toBe(true);
      // The enclave paused reading this session while its answers queued up; it reads again once they drained.
      const more = await Promise.all(Array.from({ length: 20 }, () => rpc.call('get', { k: Buffer.from('k') }, 20_000)));
      expect(more).toHaveLength(20);
    } finally {
      rpc.close();
    }
  });
});
