// The wire protocol without processes: frame bounds, the AEAD frame layer, the
// attested handshake over an in-memory stream pair with injected attest/verify
// functions, and fuzzing of the handshake and of an established session.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { documentVerifier } from '../client/trust.ts';
import { EmulatorCa } from '../emulator/ca.ts';
import { measureImage, pcrMap } from '../emulator/measure.ts';
import { EmulatedNsm } from '../emulator/nsm.ts';
import { deriveTrafficKeys, FrameOpener, FrameSealer } from '../protocol/aead.ts';
import { encodeCbor } from '../protocol/cbor.ts';
import { frameBytesMax, gcmTagBytes, handshakeBytesMax } from '../protocol/constants.ts';
import { EkvError, ekvErrorCodes } from '../protocol/errors.ts';
import { encodeFrame, FrameDecoder } from '../protocol/frame.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import {
  acceptHandshake, connectHandshake, type Accepted, type AcceptOptions, type AttestedPeer,
  type ConnectOptions, type ConnectResult, type VerifyDoc,
} from '../protocol/handshake.ts';
import { generateIdentity, verifyEd25519, type Identity } from '../protocol/keys.ts';
import { RpcClient, serveRpc } from '../protocol/rpc.ts';
import { duplexPair } from './helpers/duplex.ts';
import { fakeAttest, fakeVerify } from './helpers/fake-attest.ts';

// ------------------------------------------------------------------ helpers

/** Two connected in-memory streams: what one writes, the other reads; ending or destroying one ends the other. */

/** A stand-in document: CBOR { nonce, key }; the matching verifier checks the nonce like the real one. */

function serverOptions(over: Partial<AcceptOptions> = {}): AcceptOptions {
  return {
    identity: generateIdentity(),
    attest: fakeAttest,
    verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers here')),
    verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s),
    ring: null,
    timeoutMs: 1000,
    ...over,
  };
}

interface Pair {
  client: PromiseSettledResult<ConnectResult>;
  server: PromiseSettledResult<Accepted>;
  cfs: FramedSocket;
  sfs: FramedSocket;
}

/** Runs both halves of the handshake; a side that fails tears its stream down, as the real callers do. */
async function handshake(server: Partial<AcceptOptions> = {}, client: Partial<ConnectOptions> = {}): Promise<Pair> {
  const [a, b] = duplexPair();
  const cfs = new FramedSocket(a, handshakeBytesMax);
  const sfs = new FramedSocket(b, handshakeBytesMax);
  const c = connectHandshake(cfs, { mode: 'client', verifyServer: fakeVerify, timeoutMs: 1000, ...client });
  const s = acceptHandshake(sfs, serverOptions(server));
  c.catch(() => cfs.destroy());
  s.catch(() => sfs.destroy());
  const [cr, sr] = await Promise.allSettled([c, s]);
  return { client: cr, server: sr, cfs, sfs };
}

async function until(ok: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

function rejection(r: PromiseSettledResult<unknown>): EkvError {
  if (r.status !== 'rejected') throw new Error('expected a rejection');
  expect(r.reason).toBeInstanceOf(EkvError);
  return r.reason as EkvError;
}

function expectTyped(err: unknown): void {
  expect(err).toBeInstanceOf(EkvError);
  expect(ekvErrorCodes.has((err as EkvError).code)).toBe(true);
}

function header(len: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(len >>> 0, 0);
  return b;
}

// ------------------------------------------------------------------ frames

describe('FrameDecoder', () => {
  it('refuses a length over the limit from the 4-byte header alone, before any body arrives', () => {
    for (const len of [1001, 0x7fffffff, 0xffffffff]) {
      const d = new FrameDecoder(1000);
      let err: unknown;
      try {
        d.push(header(len));
      } catch (e) {
        err = e;
      }
      expect((err as EkvError).code).toBe('FRAME_TOO_LARGE');
      expect(d.pendingBytes).toBe(4); // nothing beyond the header was buffered
    }
  });

  it('refuses an oversized header split over two chunks', () => {
    const d = new FrameDecoder(frameBytesMax);
    const h = header(frameBytesMax + 1);
    expect(d.push(h.subarray(0, 2))).toEqual([]);
    expect(() => d.push(h.subarray(2))).toThrow(expect.objectContaining({ code: 'FRAME_TOO_LARGE' }));
  });

  it('accepts a frame of exactly the limit and an empty frame', () => {
    const d = new FrameDecoder(16);
    const body = randomBytes(16);
    const frames = d.push(Buffer.concat([encodeFrame(body), encodeFrame(new Uint8Array(0))]));
    expect(frames.map((f) => f.toString('hex'))).toEqual([body.toString('hex'), '']);
    expect(d.pendingBytes).toBe(0);
  });

  it('yields the same frames however the stream is split or merged into chunks', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (bodies, cutSeeds) => {
          const stream = Buffer.concat(bodies.map((b) => encodeFrame(b)));
          const cuts = [...new Set(cutSeeds.map((c) => (stream.length === 0 ? 0 : c % stream.length)))].sort((x, y) => x - y);
          const d = new FrameDecoder(300);
          const out: Buffer[] = [];
          let prev = 0;
          for (const c of [...cuts, stream.length]) {
            out.push(...d.push(stream.subarray(prev, c)));
            prev = c;
          }
          expect(out.map((f) => f.toString('hex'))).toEqual(bodies.map((b) => Buffer.from(b).toString('hex')));
          expect(d.pendingBytes).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });
});

// ------------------------------------------------------------------ AEAD frames

describe('FrameSealer / FrameOpener', () => {
  const pair = () => {
    const keys = deriveTrafficKeys(randomBytes(32), randomBytes(32));
    // Each side gets its own copy: the ratchet wipes keys in place.
    const copy = (k: typeof keys.c2s) => ({ key: Buffer.from(k.key), salt: Buffer.from(k.salt) });
    return {
      sealer: new FrameSealer(copy(keys.c2s)),
      opener: new FrameOpener(copy(keys.c2s)),
      reverseOpener: new FrameOpener(copy(keys.s2c)),
    };
  };
  const sealN = (sealer: FrameSealer, n: number) => Array.from({ length: n }, (_, i) => sealer.seal(Buffer.from(`message ${i}`)));
  const tampered = (f: () => unknown) => expect(f).toThrow(expect.objectContaining({ code: 'TAMPERED' }));

  it('opens frames in order', () => {
    const { sealer, opener } = pair();
    const frames = sealN(sealer, 5);
    expect(frames.map((f) => opener.open(f).toString())).toEqual(['message 0', 'message 1', 'message 2', 'message 3', 'message 4']);
  });

  it('refuses a replayed frame', () => {
    const { sealer, opener } = pair();
    const [f0, f1] = sealN(sealer, 2) as [Buffer, Buffer];
    opener.open(f0);
    tampered(() => opener.open(f0));
    expect(opener.open(f1).toString()).toBe('message 1');
  });

  it('refuses reordered frames', () => {
    const { sealer, opener } = pair();
    const [, f1] = sealN(sealer, 2) as [Buffer, Buffer];
    tampered(() => opener.open(f1));
  });

  it('refuses the frame after a dropped one', () => {
    const { sealer, opener } = pair();
    const [f0, , f2] = sealN(sealer, 3) as [Buffer, Buffer, Buffer];
    opener.open(f0);
    tampered(() => opener.open(f2));
  });

  it('refuses a frame reflected back in the other direction', () => {
    const { sealer, reverseOpener } = pair();
    tampered(() => reverseOpener.open(sealer.seal(Buffer.from('x'))));
  });

  it('refuses frames shorter than the tag, and truncated frames', () => {
    const { sealer, opener } = pair();
    const f = sealer.seal(Buffer.from('hello world'));
    tampered(() => opener.open(Buffer.alloc(0)));
    tampered(() => opener.open(f.subarray(0, gcmTagBytes - 1)));
    tampered(() => opener.open(f.subarray(0, f.length - 1)));
    tampered(() => opener.open(f.subarray(1)));
    expect(opener.open(f).toString()).toBe('hello world');
  });

  it('refuses any single altered bit anywhere in a frame', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(), fc.integer({ min: 0, max: 7 }), (msg, pos, bit) => {
        const { sealer, opener } = pair();
        const f = Buffer.from(sealer.seal(msg));
        const i = pos % f.length;
        f[i] = (f[i] as number) ^ (1 << bit);
        tampered(() => opener.open(f));
      }),
      { numRuns: 200 },
    );
  });
});

// ------------------------------------------------------------------ handshake

describe('attested handshake', () => {
  it('establishes a session: requests and answers flow, the client learns the attested key', async () => {
    const identity = generateIdentity();
    const p = await handshake({ identity });
    if (p.client.status !== 'fulfilled' || p.server.status !== 'fulfilled') throw new Error('handshake failed');
    expect(p.client.value.serverKey.equals(identity.publicKey)).toBe(true);
    const accepted = p.server.value;
    if (accepted.kind !== 'session') throw new Error('expected a session');
    expect(accepted.principal).toBeNull();
    serveRpc(accepted.session, (op, req) => ({ echo: req.x, op }), () => undefined);
    const rpc = new RpcClient(p.client.value.session);
    const answers = await Promise.all([1, 2, 3].map((x) => rpc.call('ping', { x }, 1000)));
    expect(answers.map((a) => [a.op, a.echo])).toEqual([['ping', 1], ['ping', 2], ['ping', 3]]);
    rpc.close();
  });

  it('one-way requests (notify): handled, never answered, and only for the ops the server allows', async () => {
    const p = await handshake();
    if (p.client.status !== 'fulfilled' || p.server.status !== 'fulfilled' || p.server.value.kind !== 'session') throw new Error('handshake failed');
    const handled: unknown[] = [];
    let serverClosed: EkvError | null = null;
    serveRpc(p.server.value.session, (op, req) => {
      handled.push([op, req.x]);
      if (req.x === 'boom') throw new EkvError('BAD_REQUEST', 'refused');
      return { echo: req.x };
    }, (err) => (serverClosed = err), { oneWay: (op) => op === 'dm' });
    // The raw client side: every message the server sends back is seen here.
    const seen: Array<Record<string, unknown>> = [];
    const session = p.client.value.session;
    session.start((m) => seen.push(m as Record<string, unknown>), () => undefined);
    session.send({ i: -1, o: 'dm', x: 'a' });
    session.send({ i: -2, o: 'dm', x: 'boom' }); // a failure is not answered either
    session.send({ i: 7, o: 'dm', x: 'b' }); // the same op as a call is answered
    await until(() => seen.length >= 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(handled).toEqual([['dm', 'a'], ['dm', 'boom'], ['dm', 'b']]);
    expect(seen).toEqual([{ echo: 'b', i: 7, ok: true }]);
    expect(serverClosed).toBeNull();
    // One-way for an op the server does not allow ends the session, unhandled.
    session.send({ i: -3, o: 'put', x: 'c' });
    await until(() => serverClosed !== null);
    expect(serverClosed).toMatchObject({ code: 'PROTOCOL' });
    expect(handled).toHaveLength(3);
  });

  it('RpcClient.notify sends a negative id and drops an answer to it (an older server answers everything)', async () => {
    const p = await handshake();
    if (p.client.status !== 'fulfilled' || p.server.status !== 'fulfilled' || p.server.value.kind !== 'session') throw new Error('handshake failed');
    // An older server: answers every request, one-way or not.
    const server = p.server.value.session;
    const got: Array<Record<string, unknown>> = [];
    server.start((m) => {
      const r = m as Record<string, unknown>;
      got.push(r);
      server.send({ i: r.i, ok: true, echo: r.x });
    }, () => undefined);
    const rpc = new RpcClient(p.client.value.session);
    expect(rpc.notify('dm', { x: 1 })).toBe(true);
    expect(rpc.notify('dm', { x: 2 })).toBe(true);
    const answer = await rpc.call('ping', { x: 3 }, 1000);
    expect(answer.echo).toBe(3);
    expect(got.map((r) => [r.i, r.o, r.x])).toEqual([[-1, 'dm', 1], [-2, 'dm', 2], [1, 'ping', 3]]);
    expect(rpc.closed).toBe(false);
    expect(rpc.inflight).toBe(0);
    rpc.close();
    expect(rpc.notify('dm', { x: 4 })).toBe(false);
  });

  it('passes a fresh nonce to the verifier in every handshake', async () => {
    const seen: Buffer[] = [];
    const spy: VerifyDoc = (doc, nonce) => {
      seen.push(Buffer.from(nonce));
      return fakeVerify(doc, nonce);
    };
    for (let i = 0; i < 3; i++) {
      const p = await handshake({}, { verifyServer: spy });
      expect(p.client.status).toBe('fulfilled');
      p.cfs.destroy();
    }
    expect(seen).toHaveLength(3);
    expect(new Set(seen.map((n) => n.toString('hex'))).size).toBe(3);
    for (const n of seen) expect(n.length).toBe(32);
  });

  it('refuses when the verifier refuses the document, and the server gets a typed error', async () => {
    const p = await handshake({}, {
      verifyServer: () => Promise.reject(new EkvError('UNATTESTED', 'no', { reason: 'PCR_MISMATCH' })),
    });
    const e = rejection(p.client);
    expect([e.code, e.reason]).toEqual(['UNATTESTED', 'PCR_MISMATCH']);
    expectTyped(rejection(p.server));
  });

  it('refuses a server that signs with another identity than the one its document carries', async () => {
    const attested = generateIdentity();
    const p = await handshake({
      identity: generateIdentity(),
      // A genuine document of another enclave (its key), bound to the client's nonce.
      attest: (nonce) => fakeAttest(nonce, attested.publicKey),
    });
    expect(rejection(p.client).code).toBe('TAMPERED');
  });

  it('refuses a document without an identity key', async () => {
    const p = await handshake({ attest: (nonce) => Promise.resolve(encodeCbor({ nonce, key: null })) });
    const e = rejection(p.client);
    expect([e.code, e.reason]).toEqual(['UNATTESTED', 'NO_IDENTITY_KEY']);
  });

  it('refuses a document replayed from an earlier handshake (bound to an old nonce)', async () => {
    let recorded: Uint8Array | null = null;
    const identity: Identity = generateIdentity();
    const first = await handshake({ identity, attest: async (n, k) => (recorded = await fakeAttest(n, k)) });
    expect(first.client.status).toBe('fulfilled');
    first.cfs.destroy();
    const replay = await handshake({ identity, attest: () => Promise.resolve(recorded as Uint8Array) });
    const e = rejection(replay.client);
    expect([e.code, e.reason]).toEqual(['UNATTESTED', 'NONCE_MISMATCH']);
  });

  it('proves a principal, and refuses a principal signature that does not match', async () => {
    const principal = generateIdentity();
    const ok = await handshake({}, { principal: { principal: principal.publicKey, sign: (m) => principal.sign(m) } });
    if (ok.server.status !== 'fulfilled' || ok.server.value.kind !== 'session') throw new Error('expected a session');
    expect(ok.server.value.principal?.equals(principal.publicKey)).toBe(true);
    ok.cfs.destroy();

    const impostor = generateIdentity();
    const bad = await handshake({}, { principal: { principal: principal.publicKey, sign: (m) => impostor.sign(m) } });
    expect(rejection(bad.server).code).toBe('FORBIDDEN');
  });

  describe('with the emulated NSM and the client verifier', () => {
    let dir: string;
    let ca: EmulatorCa;
    let nsm: EmulatedNsm;
    const pcrs = pcrMap(measureImage(Buffer.from('a test image\n')));
    const pcrHex = { '0': Buffer.from(pcrs.get(0) as Uint8Array).toString('hex') };

    beforeAll(async () => {
      dir = await mkdtemp('/tmp/ekv-proto-');
      ca = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
      nsm = new EmulatedNsm({ ca, pcrs, moduleId: ca.newModuleId() });
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    const realAttest = (nonce: Uint8Array, publicKey: Uint8Array) => nsm.attest({ nonce, publicKey });

    it('connects when the document verifies, and refuses a replayed one with NONCE_MISMATCH', async () => {
      const verifyServer = documentVerifier({ roots: [ca.rootPem], pcrs: pcrHex });
      const identity = generateIdentity();
      let recorded: Uint8Array | null = null;
      // A real document is signed and checked here (P-384, the chain): allow for a loaded machine.
      const first = await handshake({ identity, attest: async (n, k) => (recorded = await realAttest(n, k)) }, { verifyServer, timeoutMs: 15_000 });
      expect(first.client.status).toBe('fulfilled');
      first.cfs.destroy();
      const replay = await handshake({ identity, attest: () => Promise.resolve(recorded as Uint8Array) }, { verifyServer, timeoutMs: 15_000 });
      const e = rejection(replay.client);
      expect([e.code, e.reason]).toEqual(['UNATTESTED', 'NONCE_MISMATCH']);
    });

    it('refuses other PCRs and an untrusted root', async () => {
      const wrongPcr = await handshake({ attest: realAttest }, {
        verifyServer: documentVerifier({ roots: [ca.rootPem], pcrs: { '0': 'ab'.repeat(48) } }),
      });
      expect(rejection(wrongPcr.client).reason).toBe('PCR_MISMATCH');
      const awsOnly = await handshake({ attest: realAttest }, { verifyServer: documentVerifier({}) });
      expect(rejection(awsOnly.client).reason).toBe('UNTRUSTED_ROOT');
    });
  });
});

// ------------------------------------------------------------------ fuzzing

/** What a hostile client may send before or during the handshake. */
const hostileHandshakeInput = fc.oneof(
  fc.uint8Array({ maxLength: 400 }), // raw bytes, framing and all
  fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 4 }).map((bodies) => Buffer.concat(bodies.map((b) => encodeFrame(b)))),
  fc.array(fc.anything(), { maxLength: 3 }).map((xs) => Buffer.concat(xs.map((x) => encodeFrame(encodeCbor(x))))),
  fc
    .record({
      v: fc.oneof(fc.constant(1), fc.anything()),
      mode: fc.constantFrom('client', 'peer', 'attest', 'other'),
      nonce: fc.uint8Array({ maxLength: 40 }),
      eph: fc.uint8Array({ minLength: 30, maxLength: 33 }),
      finish: fc.anything(),
    })
    .map((h) =>
      Buffer.concat([
        encodeFrame(encodeCbor({ t: 'hello', v: h.v, mode: h.mode, nonce: h.nonce, eph: h.eph })),
        encodeFrame(encodeCbor(h.finish)),
      ]),
    ),
);

describe('hostile input never crashes, always a typed error', () => {
  it('at the server handshake', async () => {
    await fc.assert(
      fc.asyncProperty(hostileHandshakeInput, fc.boolean(), async (input, split) => {
        const [a, b] = duplexPair();
        const sfs = new FramedSocket(b, handshakeBytesMax);
        const accepted = acceptHandshake(sfs, serverOptions({ timeoutMs: 500 }));
        if (split) for (const byte of input) a.write(Buffer.of(byte));
        else a.write(input);
        a.end();
        try {
          const r = await accepted;
          // Only a well-formed exchange may succeed; then it is a real session or an attestation answer.
          expect(['session', 'attest']).toContain(r.kind);
        } catch (err) {
          expectTyped(err);
        } finally {
          sfs.destroy();
        }
      }),
      { numRuns: 150 },
    );
  });

  it('in an established session, on either side: never a delivered message or answer', async () => {
    await fc.assert(
      fc.asyncProperty(hostileHandshakeInput, fc.boolean(), async (junk, atServer) => {
        const p = await handshake();
        if (p.client.status !== 'fulfilled' || p.server.status !== 'fulfilled' || p.server.value.kind !== 'session') {
          throw new Error('handshake failed');
        }
        let handled = 0;
        let serverClosed: EkvError | null = null;
        // The server never answers: whatever settles the client's call can only come from the junk.
        serveRpc(p.server.value.session, () => {
          handled++;
          return new Promise<never>(() => undefined);
        }, (err) => (serverClosed = err));
        const rpc = new RpcClient(p.client.value.session);
        const pending = atServer ? null : rpc.call('get', {}, 2000);
        // Bytes injected straight into one side's incoming stream, as an attacker on the wire would.
        const target = (atServer ? p.sfs : p.cfs).socket;
        target.push(junk);
        target.push(null);
        if (pending) await expect(pending).rejects.toSatisfy((e: unknown) => e instanceof EkvError && ekvErrorCodes.has(e.code));
        else {
          await new Promise((r) => setImmediate(r));
          expect(serverClosed).not.toBeNull();
          expectTyped(serverClosed);
        }
        if (atServer) expect(handled).toBe(0);
        rpc.close();
      }),
      { numRuns: 100 },
    );
  });
});
