// A man in the middle between the SDK and a node's host flips, drops, replays,
// reorders and truncates the encrypted stream. Whatever it does, the client
// gets a typed error and never a value other than the one that was written;
// once the attacker stops, the same client recovers on a fresh connection.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { documentVerifier } from '../client/trust.ts';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { startMitm, type Mitm, type MitmAction, type MitmOptions } from './helpers/mitm.ts';
import { startTestRing, type TestRing } from './helpers/local-ring.ts';

/** What a client may see under attack: never a value, always one of these. */
// UNAVAILABLE: the enclave refused the handshake; its unauthenticated error frame is only a hint (reason).
const attackCodes = new Set(['TAMPERED', 'PROTOCOL', 'CLOSED', 'TIMEOUT', 'UNATTESTED', 'FRAME_TOO_LARGE', 'UNAVAILABLE']);
const requestTimeoutMs = 2000;

let t: TestRing;

beforeAll(async () => {
  t = await startTestRing({ nodes: 2 });
});

afterAll(async () => {
  await t?.stop();
});

const nodeA = () => t.node(0);
const nodeB = () => t.node(1);

function clientVia(addr: string): Promise<EkvClient> {
  return connect({ nodes: [addr], trust: t.cluster.trust, timeoutMs: requestTimeoutMs });
}

interface Outcome {
  ok: number;
  codes: string[];
}

/**
 * Four puts, then four gets, one after another: the session seals the messages of one event-loop turn
 * into one frame, so sequential requests give one frame per request and per answer, which the scenarios
 * below address by number. (Many requests in flight on one connection: e2e-node.test.ts.)
 * Every key has exactly one value it may ever hold.
 */
async function workload(kv: EkvClient, tag: string, written: Map<string, string>): Promise<Outcome> {
  const keys = [0, 1, 2, 3].map((i) => `${tag}-${i}`);
  for (const k of keys) if (!written.has(k)) written.set(k, `${k}=${randomBytes(8).toString('hex')}`);
  const out: Outcome = { ok: 0, codes: [] };
  const failed = (err: unknown, alsoAllowed: string[] = []) => {
    expect(err).toBeInstanceOf(EkvError);
    const code = (err as EkvError).code;
    expect([...attackCodes, ...alsoAllowed]).toContain(code);
    out.codes.push(code);
  };
  const settle = async <T>(p: Promise<T>): Promise<PromiseSettledResult<T>> =>
    p.then((value) => ({ status: 'fulfilled' as const, value }), (reason: unknown) => ({ status: 'rejected' as const, reason }));
  const puts: PromiseSettledResult<number>[] = [];
  for (const k of keys) puts.push(await settle(kv.put(k, written.get(k) as string)));
  for (const r of puts) {
    if (r.status === 'fulfilled') out.ok++;
    else failed(r.reason);
  }
  const gets: PromiseSettledResult<Buffer>[] = [];
  for (const k of keys) gets.push(await settle(kv.get(k)));
  for (const [i, r] of gets.entries()) {
    if (r.status === 'fulfilled') {
      // THE property: a value that reaches the caller is the value written for that key.
      expect(r.value.toString()).toBe(written.get(keys[i] as string));
      out.ok++;
    } else failed(r.reason, ['NOT_FOUND']); // the put may never have reached the enclave
  }
  return out;
}

/** Attack one connection, check errors and values, then check the client recovers through the same proxy. */
async function underAttack(tag: string, opts: Omit<MitmOptions, 'target'>): Promise<{ attacked: Outcome; fired: string[]; detected: boolean }> {
  const mitm = await startMitm({ target: nodeA().addr, ...opts });
  const kv = await clientVia(mitm.addr);
  try {
    const written = new Map<string, string>();
    const attacked = await workload(kv, tag, written);
    const tamperedConnectionDropped = mitm.connections > 1;
    const recovered = await workload(kv, tag, written);
    expect(recovered).toEqual({ ok: 8, codes: [] });
    // Detected = a request failed with a typed code, or the client abandoned the tampered connection
    // (a replayed answer arriving while nothing is in flight ends the session without failing a request).
    return { attacked, fired: [...mitm.fired], detected: attacked.codes.length > 0 || tamperedConnectionDropped };
  } finally {
    await kv.close();
    await mitm.close();
  }
}

/** Flip byte `at` of frame `frame` (0..3: its length prefix; negative: from the end). */
function flip(frame: number, at: number, mask = 0x01): MitmAction {
  return { kind: 'flip', where: { frame, at }, mask };
}

// c2s frames: 0 hello, 1 finish, 2..5 puts, 6..9 gets; s2c frames: 0 server hello, 1..4 put answers, 5..8 get answers.
// `expect`: the codes the client may see (the enclave closing on tampering shows as CLOSED).
const scenarios: Array<{ name: string; c2s?: MitmAction[]; s2c?: MitmAction[]; expect: string[] }> = [
  { name: 'flip a byte of the hello', c2s: [flip(0, 30)], expect: ['TAMPERED', 'UNATTESTED', 'PROTOCOL', 'UNAVAILABLE'] },
  { name: 'flip a byte inside the server document', s2c: [{ kind: 'flip', where: { offset: 1000 } }], expect: ['UNATTESTED', 'PROTOCOL'] },
  { name: 'flip the last byte of the server signature', s2c: [flip(0, -1)], expect: ['TAMPERED'] },
  { name: 'drop the server hello', s2c: [{ kind: 'drop', frame: 0 }], expect: ['TIMEOUT'] },
  { name: 'drop the finish', c2s: [{ kind: 'drop', frame: 1 }], expect: ['TAMPERED', 'CLOSED'] },
  { name: 'replay the hello', c2s: [{ kind: 'replay', frame: 0 }], expect: ['TAMPERED', 'CLOSED'] },
  { name: 'replay the server hello', s2c: [{ kind: 'replay', frame: 0 }], expect: ['TAMPERED'] },
  { name: 'truncate the server hello', s2c: [{ kind: 'truncate', where: { frame: 0, at: 2000 } }], expect: ['CLOSED'] },
  { name: 'flip a byte of a request', c2s: [flip(2, 20)], expect: ['CLOSED'] },
  { name: 'flip a byte of an answer', s2c: [flip(1, 10)], expect: ['TAMPERED'] },
  { name: 'flip the top bit of a request length', c2s: [flip(2, 0, 0x80)], expect: ['CLOSED'] },
  { name: 'flip the top bit of an answer length', s2c: [flip(1, 0, 0x80)], expect: ['FRAME_TOO_LARGE'] },
  { name: 'drop a request', c2s: [{ kind: 'drop', frame: 2 }], expect: ['CLOSED', 'TIMEOUT'] },
  { name: 'drop an answer', s2c: [{ kind: 'drop', frame: 1 }], expect: ['TAMPERED', 'TIMEOUT'] },
  { name: 'replay a request', c2s: [{ kind: 'replay', frame: 2 }], expect: ['CLOSED', 'TIMEOUT'] },
  { name: 'replay an answer later', s2c: [{ kind: 'replay', frame: 1, after: 5 }], expect: ['TAMPERED'] },
  // Sequential requests: a relay holding a frame back to swap it with the next one stalls the session.
  { name: 'swap two requests', c2s: [{ kind: 'reorder', frame: 2 }], expect: ['CLOSED', 'TIMEOUT'] },
  { name: 'swap two get answers', s2c: [{ kind: 'reorder', frame: 5 }], expect: ['TAMPERED', 'TIMEOUT'] },
  { name: 'truncate inside a request', c2s: [{ kind: 'truncate', where: { frame: 3, at: 10 } }], expect: ['CLOSED'] },
  { name: 'truncate inside an answer', s2c: [{ kind: 'truncate', where: { frame: 2, at: 10 } }], expect: ['CLOSED'] },
];

describe('a MITM on the client-host link', () => {
  describe.concurrent('each tampering is detected, no wrong value, the client recovers', () => {
    for (const s of scenarios) {
      it(s.name, async () => {
        const { attacked, fired, detected } = await underAttack(`s${scenarios.indexOf(s)}`, { c2s: s.c2s ?? [], s2c: s.s2c ?? [] });
        expect(fired.length).toBeGreaterThan(0);
        expect(detected).toBe(true);
        for (const c of attacked.codes) if (c !== 'NOT_FOUND') expect(s.expect).toContain(c);
      });
    }
  });

  it('random single tamperings: typed errors only, never a wrong value', async () => {
    const action = fc.oneof(
      fc.record({ dir: fc.constantFrom('c2s', 's2c'), frame: fc.integer({ min: 1, max: 8 }), at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) })
        .map(({ dir, frame, at, mask }) => ({ dir, a: flip(frame, 4 + (at % 20), mask) })),
      fc.record({ dir: fc.constantFrom('c2s', 's2c'), frame: fc.integer({ min: 1, max: 7 }), kind: fc.constantFrom('drop', 'replay', 'reorder') })
        .map(({ dir, frame, kind }) => ({ dir, a: { kind, frame } as MitmAction })),
    );
    let run = 0;
    await fc.assert(
      fc.asyncProperty(action, async ({ dir, a }) => {
        const { attacked, fired, detected } = await underAttack(`rand${run++}`, dir === 'c2s' ? { c2s: [a] } : { s2c: [a] });
        // A tampering that took effect is always noticed (one aimed past a frame's end changes nothing).
        if (fired.length > 0) expect(detected).toBe(true);
        else expect(attacked.ok).toBe(8);
      }),
      { numRuns: 25 },
    );
  });
});


// ------------------------------------------------------------------ another node's identity

/** The identity key node `n` attests to (verified, for a fresh nonce). */
async function attestedKey(http: string): Promise<string> {
  const nonce = randomBytes(32);
  const doc = new Uint8Array(await (await fetch(`${http}/v1/attestation?nonce=${nonce.toString('hex')}`)).arrayBuffer());
  const v = await documentVerifier(t.cluster.trust)(doc, nonce);
  return Buffer.from(v.publicKey as Uint8Array).toString('hex');
}

/** One frame from `addr` after sending `frames` (a raw protocol exchange, as an attacker runs it). */
async function exchange(addr: string, frames: Buffer[]): Promise<Buffer> {
  const [host, port] = addr.split(':') as [string, string];
  const socket = net.connect({ host, port: Number(port) });
  const fs = new FramedSocket(socket, handshakeBytesMax);
  try {
    for (const f of frames) fs.write(f);
    return await fs.next(5000);
  } finally {
    socket.destroy();
  }
}

describe('a host that answers with another node', () => {
  // Both nodes run the same image under the same root, so both satisfy the client's policy.
  // What must hold: the client ends up with a session to whoever holds the key in the document
  // it verified, and knows that key; a mix of one node's document or handshake with another
  // node's traffic gets nothing through.

  it('relaying the whole connection to node B gives a session with B, under B\'s key, not A\'s', async () => {
    const mitm = await startMitm({ target: nodeB().addr, tamperConnections: 0 });
    const kv = await clientVia(mitm.addr);
    try {
      await kv.put('redirected', 'to B');
      const [keyA, keyB] = await Promise.all([attestedKey(nodeA().http), attestedKey(nodeB().http)]);
      expect(keyA).not.toBe(keyB);
      expect(kv.node(mitm.addr).identityKey?.toString('hex')).toBe(keyB);
      // B itself answers for what the client wrote through the redirect.
      const direct = await clientVia(nodeB().addr);
      expect((await direct.get('redirected')).toString()).toBe('to B');
      await direct.close();
      // An address is not an identity: the SDK routes by the attested identity (ring id = SHA-256 of
      // the key), so a redirected address changes which genuine node serves, never what is believed.
    } finally {
      await kv.close();
      await mitm.close();
    }
  });

  it("refuses A's handshake carrying B's genuine document for the client's nonce (TAMPERED)", async () => {
    let substituteVerified = false;
    const mitm = await startMitm({
      target: nodeA().addr,
      // Every connection: the SDK retries retryable errors on fresh connections for a whole request timeout.
      tamperConnections: 10_000,
      s2c: [{
        kind: 'rewrite',
        frame: 0,
        rewrite: async (body, ctx) => {
          const hello = decodeCbor(ctx.seen.c2s[0] as Buffer) as { nonce: Uint8Array };
          const nonce = Buffer.from(hello.nonce);
          const res = await fetch(`${nodeB().http}/v1/attestation?nonce=${nonce.toString('hex')}`);
          const docB = new Uint8Array(await res.arrayBuffer());
          // The substitute is a document the client's policy accepts, bound to the client's own nonce.
          await documentVerifier(t.cluster.trust)(docB, nonce);
          substituteVerified = true;
          const server = decodeCbor(body) as { core: Uint8Array; sig: Uint8Array };
          const core = decodeCbor(server.core) as Record<string, unknown>;
          return encodeCbor({ t: 'server', core: encodeCbor({ ...core, doc: docB }), sig: server.sig });
        },
      }],
    });
    const kv = await clientVia(mitm.addr);
    try {
      const err = await kv.put('substituted', 'x').catch((e: unknown) => e);
      expect(substituteVerified).toBe(true);
      expect(err).toBeInstanceOf(EkvError);
      expect((err as EkvError).code).toBe('TAMPERED');
    } finally {
      await kv.close();
      await mitm.close();
    }
  });

  it("splicing B's whole server hello into a connection to A gets no request through", async () => {
    const mitm = await startMitm({
      target: nodeA().addr,
      // Every connection: the SDK retries retryable errors on fresh connections for a whole request timeout.
      tamperConnections: 10_000,
      // B answers the client's own hello; the client then talks to A with keys agreed with B.
      s2c: [{ kind: 'rewrite', frame: 0, rewrite: (_body, ctx) => exchange(nodeB().addr, [ctx.seen.c2s[0] as Buffer]) }],
    });
    const kv = await clientVia(mitm.addr);
    try {
      const written = new Map<string, string>();
      const out = await workload(kv, 'spliced', written);
      expect(out.ok).toBe(0);
      expect(mitm.fired).toContain('s2c:rewrite#0');
      for (const c of out.codes) expect(['CLOSED', 'TAMPERED', 'NOT_FOUND']).toContain(c);
    } finally {
      await kv.close();
      await mitm.close();
    }
  });
});
