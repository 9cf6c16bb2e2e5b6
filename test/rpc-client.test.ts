// The client side of the RPC layer (protocol/rpc.ts) over a real SecureSession (AES-GCM frames, CBOR) on an
// in-memory stream: what its fast paths (one resolver-capturing executor for every call, one sweep timer per
// connection instead of a timer per request) must keep: every call answered in the order the server answers,
// a call without an answer failing with TIMEOUT (and the session with it), every pending call rejected with the
// one typed error the session closed with, and nothing pending left behind.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { deriveTrafficKeys, FrameOpener, FrameSealer } from '../protocol/aead.ts';
import { frameBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { RpcClient, serveRpc, timeoutSweepMs, type RpcResult } from '../protocol/rpc.ts';
import { SecureSession } from '../protocol/session.ts';
import { duplexPair } from './helpers/duplex.ts';


/** A client RpcClient and the server's session over one stream; `handle` answers (or holds) each request. */
function pair(handle: (op: string, req: Record<string, unknown>) => Promise<RpcResult> | RpcResult): { rpc: RpcClient; server: SecureSession } {
  const [a, b] = duplexPair();
  const shared = randomBytes(32);
  const transcript = randomBytes(32);
  const ck = deriveTrafficKeys(shared, transcript);
  const sk = deriveTrafficKeys(shared, transcript);
  const client = new SecureSession(new FramedSocket(a, frameBytesMax), new FrameSealer(ck.c2s), new FrameOpener(ck.s2c));
  const server = new SecureSession(new FramedSocket(b, frameBytesMax), new FrameSealer(sk.s2c), new FrameOpener(sk.c2s));
  serveRpc(server, handle, () => undefined);
  return { rpc: new RpcClient(client), server };
}

async function settle<T>(p: Promise<T>): Promise<T | EkvError> {
  try {
    return await p;
  } catch (err) {
    return err as EkvError;
  }
}

afterEach(() => {
  vi.useRealTimers();
});

describe('RpcClient', () => {
  it('answers every call with its own result, many in flight, in the order the server answers', async () => {
    const { rpc } = pair((op, req) => (op === 'echo' ? { x: req.x } : Promise.resolve({ late: req.x })));
    const calls = Array.from({ length: 300 }, (_, i) => rpc.call(i % 3 === 0 ? 'slow' : 'echo', { x: i }, 5000));
    const order: number[] = [];
    calls.forEach((c, i) => void c.then(() => order.push(i)));
    const results = await Promise.all(calls);
    results.forEach((r, i) => expect(r).toMatchObject(i % 3 === 0 ? { ok: true, late: i } : { ok: true, x: i }));
    expect(order).toHaveLength(300);
    expect(rpc.inflight).toBe(0);
    rpc.close();
  });

  it('a refusal rejects that call alone, with its typed error', async () => {
    const { rpc } = pair((op) => {
      if (op === 'bad') throw new EkvError('FORBIDDEN', 'no');
      return {};
    });
    const [bad, good] = await Promise.all([settle(rpc.call('bad', {}, 5000)), settle(rpc.call('good', {}, 5000))]);
    expect(bad).toBeInstanceOf(EkvError);
    expect(bad).toMatchObject({ code: 'FORBIDDEN', message: 'no' });
    expect(good).toMatchObject({ ok: true });
    expect(rpc.closed).toBe(false);
    rpc.close();
  });

  it('a call without an answer fails with TIMEOUT after its timeout (one sweep timer, no timer per call), and the session is closed', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'Date'] });
    const never = new Promise<RpcResult>(() => undefined);
    const { rpc } = pair((op) => (op === 'hang' ? never : {}));
    const answered = await rpc.call('quick', {}, 1000);
    expect(answered).toMatchObject({ ok: true });
    const hung = settle(rpc.call('hang', {}, 1000));
    let done = false;
    void hung.then(() => (done = true));
    await vi.advanceTimersByTimeAsync(1000 - timeoutSweepMs);
    expect(done).toBe(false); // not before its deadline
    await vi.advanceTimersByTimeAsync(2 * timeoutSweepMs + 1);
    expect(done).toBe(true);
    const err = await hung;
    expect(err).toBeInstanceOf(EkvError);
    expect(err).toMatchObject({ code: 'TIMEOUT', message: 'hang: no answer in time' });
    // The silent session is not trusted again: the next call fails at once with the session's TIMEOUT.
    expect(rpc.closed).toBe(true);
    expect(await settle(rpc.call('quick', {}, 1000))).toMatchObject({ code: 'TIMEOUT', message: 'a request timed out; session closed' });
  });

  it('a timeout still fires for a call made after the sweep timer stopped (all earlier calls answered)', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout', 'Date'] });
    const never = new Promise<RpcResult>(() => undefined);
    const { rpc } = pair((op) => (op === 'hang' ? never : {}));
    await rpc.call('quick', {}, 1000);
    await vi.advanceTimersByTimeAsync(5 * timeoutSweepMs); // the sweeper finds nothing pending and stops
    const hung = settle(rpc.call('hang', {}, 300));
    await vi.advanceTimersByTimeAsync(300 + timeoutSweepMs + 1);
    expect(await hung).toMatchObject({ code: 'TIMEOUT' });
  });

  it('closing rejects every pending call with the same typed error, at once, and later calls too', async () => {
    const never = new Promise<RpcResult>(() => undefined);
    const { rpc } = pair(() => never);
    const pending = Array.from({ length: 50 }, (_, i) => settle(rpc.call('hang', { i }, 60_000)));
    await new Promise((r) => setImmediate(r));
    expect(rpc.inflight).toBe(50);
    rpc.close();
    const errs = await Promise.all(pending);
    for (const e of errs) {
      expect(e).toBeInstanceOf(EkvError);
      expect(e).toBe(errs[0]);
    }
    expect(errs[0]).toMatchObject({ code: 'CLOSED' });
    expect(rpc.inflight).toBe(0);
    expect(await settle(rpc.call('x', {}, 1000))).toBe(errs[0]);
  });

  it('the peer closing the stream rejects every pending call with CLOSED', async () => {
    const never = new Promise<RpcResult>(() => undefined);
    const { rpc, server } = pair(() => never);
    const pending = Array.from({ length: 10 }, () => settle(rpc.call('hang', {}, 60_000)));
    await new Promise((r) => setImmediate(r));
    server.close();
    const errs = await Promise.all(pending);
    for (const e of errs) expect(e).toMatchObject({ code: 'CLOSED' });
    expect(new Set(errs).size).toBe(1);
    expect(rpc.closed).toBe(true);
  });

  it('a message that cannot be sent rejects its call (as a throw in the promise executor did)', async () => {
    const { rpc } = pair(() => ({}));
    // 256 messages in one turn flush at once; a value CBOR cannot encode makes that flush throw.
    const calls = Array.from({ length: 255 }, () => settle(rpc.call('x', {}, 1000)));
    const bad = settle(rpc.call('x', { f: () => undefined, s: Symbol('x') }, 1000));
    expect(await bad).toBeInstanceOf(Error);
    rpc.close();
    await Promise.all(calls);
  });
});
