// Hostile bytes at a node's TCP port (relayed unchanged to the enclave):
// oversized lengths, malformed handshakes, truncated frames, garbage after a
// valid handshake, random bytes, and a crowd of idle half-open connections.
// Each gets a typed error frame or a close, and a normal client on its own
// connection keeps working throughout (the canary below).
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { documentVerifier } from '../client/trust.ts';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { handshakeBytesMax, frameBytesMax } from '../protocol/constants.ts';
import { ekvErrorCodes } from '../protocol/errors.ts';
import { encodeFrame, FrameDecoder } from '../protocol/frame.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { connectHandshake, handshakeTimeoutMs, type ConnectResult } from '../protocol/handshake.ts';
import { RpcClient } from '../protocol/rpc.ts';
import { startTestRing, type TestRing } from './helpers/local-ring.ts';

let t: TestRing;
let canary: Canary;

/** A normal client doing put/get on its own connection every few ms, checking every value. */
class Canary {
  ok = 0;
  failures: string[] = [];
  private stopped = false;
  private loop: Promise<void> | null = null;
  constructor(private readonly kv: EkvClient) {}

  start(): void {
    this.loop = (async () => {
      for (let i = 0; !this.stopped; i++) {
        const value = `canary ${i} ${randomBytes(4).toString('hex')}`;
        try {
          await this.kv.put('canary', value);
          const got = (await this.kv.get('canary')).toString();
          if (got !== value) this.failures.push(`wrong value ${got}`);
          else this.ok++;
        } catch (err) {
          this.failures.push(err instanceof EkvError ? err.code : String(err));
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

beforeAll(async () => {
  t = await startTestRing({ nodes: 1 });
  canary = new Canary(await connect({ cluster: t.cluster, trustClusterFile: true, timeoutMs: 5000 }));
  canary.start();
});

afterAll(async () => {
  await canary?.stop();
  await t?.stop();
});

interface RawResult {
  /** Frames the enclave sent back, decoded. */
  messages: Record<string, unknown>[];
  closed: boolean;
}

/** Send `bytes` on a fresh connection (optionally half-close), collect the answer until close or `waitMs`. */
function raw(bytes: Buffer, opts: { end?: boolean; waitMs?: number } = {}): Promise<RawResult> {
  const [host, port] = t.node().addr.split(':') as [string, string];
  return new Promise((resolve) => {
    const s = net.connect({ host, port: Number(port) });
    const decoder = new FrameDecoder(handshakeBytesMax);
    const messages: Record<string, unknown>[] = [];
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve({ messages, closed });
    };
    const timer = setTimeout(() => finish(false), opts.waitMs ?? 3000);
    s.on('data', (c: Buffer) => {
      for (const f of decoder.push(c)) messages.push(decodeCbor(f) as Record<string, unknown>);
    });
    s.on('error', () => undefined);
    s.on('close', () => finish(true));
    s.on('connect', () => {
      s.write(bytes);
      if (opts.end) s.end();
    });
  });
}

function header(len: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(len >>> 0, 0);
  return b;
}

function expectErrorFrame(r: RawResult, code: string): void {
  expect(r.closed).toBe(true);
  expect(r.messages).toHaveLength(1);
  expect(r.messages[0]).toMatchObject({ t: 'error', code });
}

async function stillServes(): Promise<void> {
  const kv = await connect({ cluster: t.cluster, trustClusterFile: true, timeoutMs: 5000 });
  try {
    const v = randomBytes(16).toString('hex');
    await kv.put('after', v);
    expect((await kv.get('after')).toString()).toBe(v);
  } finally {
    await kv.close();
  }
}

const hello = (over: Record<string, unknown>) =>
  encodeFrame(encodeCbor({ t: 'hello', v: 1, mode: 'client', nonce: randomBytes(32), eph: randomBytes(32), ...over }));

describe('before the handshake', () => {
  it('closes on an oversized length prefix without waiting for the body', async () => {
    for (const len of [0xffffffff, handshakeBytesMax + 1]) {
      const started = Date.now();
      const r = await raw(header(len));
      expect(r).toEqual({ messages: [], closed: true });
      expect(Date.now() - started).toBeLessThan(2000);
    }
    await stillServes();
  });

  it('answers garbage CBOR and wrong-shaped hellos with a PROTOCOL error frame, then closes', async () => {
    const cases = [
      encodeFrame(Buffer.from([0xff, 0xfe, 0xfd, 0x1c, 0x00])),
      encodeFrame(Buffer.from([0xbf, 0x61])), // an indefinite map cut short
      encodeFrame(encodeCbor([1, 2, 3])),
      encodeFrame(encodeCbor({ t: 'finish' })),
      hello({ v: 2 }),
      hello({ mode: 'root' }),
      hello({ nonce: randomBytes(31) }),
      hello({ nonce: 'not bytes' }),
      hello({ eph: randomBytes(33) }),
      hello({ mode: 'attest', nonce: randomBytes(513) }),
      encodeFrame(Buffer.alloc(0)),
    ];
    const results = await Promise.all(cases.map((c) => raw(c)));
    for (const r of results) expectErrorFrame(r, 'PROTOCOL');
    await stillServes();
  });

  it('closes a connection that sends a truncated frame and hangs up', async () => {
    const r = await raw(Buffer.concat([header(100), randomBytes(10)]), { end: true });
    expect(r.closed).toBe(true);
    expect(r.messages).toEqual([]);
    await stillServes();
  });

  it('random bytes: only typed error frames, always a close', async () => {
    const inputs = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b)),
        fc.uint8Array({ maxLength: 300 }).map((b) => encodeFrame(b)),
        fc.anything().map((x) => encodeFrame(encodeCbor(x))),
      ),
      { numRuns: 40, seed: 7 },
    );
    // Concurrently: the enclave must cope with them all at once.
    const results = await Promise.all(inputs.map((b) => raw(b, { end: true, waitMs: 5000 })));
    for (const r of results) {
      expect(r.closed).toBe(true);
      for (const m of r.messages) {
        expect(m.t).toBe('error');
        expect(ekvErrorCodes.has(m.code as string)).toBe(true);
      }
    }
    await stillServes();
  });
});

describe('after a valid handshake', () => {
  async function session(): Promise<{ fs: FramedSocket; r: ConnectResult; closed: Promise<void> }> {
    const [host, port] = t.node().addr.split(':') as [string, string];
    const socket = net.connect({ host, port: Number(port) });
    await new Promise((r) => socket.once('connect', r));
    const fs = new FramedSocket(socket, handshakeBytesMax);
    const r = await connectHandshake(fs, { mode: 'client', verifyServer: documentVerifier(t.cluster.trust) });
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    return { fs, r, closed };
  }

  const within = <T>(p: Promise<T>, ms: number) =>
    Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms))]);

  it('closes the session on a garbage frame', async () => {
    const { fs, closed } = await session();
    fs.socket.write(encodeFrame(randomBytes(64)));
    await within(closed, 3000);
    await stillServes();
  });

  it('closes the session on an oversized frame length', async () => {
    const { fs, closed } = await session();
    fs.socket.write(header(frameBytesMax + 1));
    await within(closed, 3000);
    await stillServes();
  });

  it('closes the session on a sealed frame that is not a request', async () => {
    const { r, closed } = await session();
    r.session.start(() => undefined, () => undefined);
    r.session.send({ hello: 'no id, no op' });
    await within(closed, 3000);
    await stillServes();
  });

  it('answers a well-formed but wrong request with a typed error and keeps the session', async () => {
    const { r, fs } = await session();
    const rpc = new RpcClient(r.session);
    await expect(rpc.call('format-disk', {}, 3000)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(rpc.call('get', { k: 'a string, not bytes' }, 3000)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(rpc.call('put', { k: Buffer.from('k') }, 3000)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    // A write without its range session's (session, seq, floor) is refused; with one it is applied.
    await expect(rpc.call('put', { k: Buffer.from('raw'), v: Buffer.from('ok') }, 3000)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(rpc.call('put', { k: Buffer.from('raw'), v: Buffer.from('ok'), s: [1, 2, 3] }, 3000)).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    const s = (await rpc.call('open', { k: Buffer.from('raw') }, 10_000)).s as number;
    expect((await rpc.call('put', { k: Buffer.from('raw'), v: Buffer.from('ok'), s: [s, 1, 1] }, 10_000)).n).toBeTypeOf('number');
    expect(Buffer.from((await rpc.call('get', { k: Buffer.from('raw') }, 3000)).v as Uint8Array).toString()).toBe('ok');
    expect(fs.closed).toBe(false);
    rpc.close();
  });
});

describe('a crowd of idle half-open connections', () => {
  const crowd = 2000;

  it(`holds ${crowd} connections that never finish a handshake, serves others meanwhile, then reclaims them`, async () => {
    const [host, port] = t.node().addr.split(':') as [string, string];
    const sockets: net.Socket[] = [];
    let closed = 0;
    const allClosed = new Promise<void>((resolve) => {
      const onClose = () => {
        if (++closed === crowd) resolve();
      };
      for (let i = 0; i < crowd; i++) {
        const s = net.connect({ host, port: Number(port) });
        s.on('error', () => undefined);
        // A length prefix cut short: the enclave waits for the rest, bounded by the handshake timeout.
        s.on('connect', () => s.write(Buffer.from([0, 0])));
        s.resume(); // read (and discard) the error frame, or 'end' never comes
        s.on('end', () => s.destroy());
        s.on('close', onClose);
        sockets.push(s);
      }
    });
    try {
      await new Promise((r) => setTimeout(r, 500));
      const started = Date.now();
      await stillServes();
      expect(Date.now() - started).toBeLessThan(3000);
      // The enclave drops each one at its handshake timeout (plus its 1 s grace), not never;
      // the margin is wide because this machine is shared (they usually all close by ~12 s).
      await Promise.race([allClosed, new Promise((r) => setTimeout(r, handshakeTimeoutMs + 8000))]);
      expect(closed).toBe(crowd);
    } finally {
      for (const s of sockets) s.destroy();
    }
    await stillServes();
  });
});

describe('the canary', () => {
  it('kept working on its own connection through all of the above', () => {
    expect(canary.failures).toEqual([]);
    expect(canary.ok).toBeGreaterThan(20);
  });
});
