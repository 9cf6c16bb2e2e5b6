// Attack (issue 10, item 3), at the protocol level: an enclave of the same image but another deployment
// (another ring secret) tries to be a peer. The peer handshake runs over an in-memory stream pair with
// stand-in documents (both sides "attested"), so only the ring credential differs. It is refused with
// WRONG_RING on whichever side checks first: the connecting side checks the server's signed ring id and its
// MAC, the accepting side checks the connecting peer's MAC. A client pinned to a ring id refuses a node of
// another ring. Controls: the same set-ups pass with the check switched off by the test-only seam
// (ringChecks), so each test would catch the hole.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeCbor, encodeCbor } from '../protocol/cbor.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import {
  acceptHandshake, connectHandshake, ringChecks, type Accepted, type ConnectResult, type RingOption, type VerifyDoc,
} from '../protocol/handshake.ts';
import { generateIdentity, verifyEd25519 } from '../protocol/keys.ts';
import { ringCredential } from '../protocol/ring.ts';
import { HandshakeAdmission } from '../enclave/admission.ts';
import { protocolVersion } from '../protocol/constants.ts';
import { duplexPair } from './helpers/duplex.ts';


const fakeAttest = (nonce: Uint8Array, publicKey: Uint8Array) => Promise.resolve(encodeCbor({ nonce, key: publicKey }));
const fakeVerify: VerifyDoc = async (doc, nonce) => {
  const d = decodeCbor(doc) as { nonce: Uint8Array; key: Uint8Array };
  if (!Buffer.from(d.nonce).equals(Buffer.from(nonce))) throw new EkvError('UNATTESTED', 'nonce differs');
  return { publicKey: d.key, pcrs: new Map(), leafNotAfter: Date.now() + 3_600_000, timestamp: Date.now(), moduleId: 'fake' };
};

interface Outcome {
  client: PromiseSettledResult<ConnectResult>;
  server: PromiseSettledResult<Accepted>;
}

async function peerHandshake(serverRing: RingOption, clientRing: RingOption, onServerAttest: () => void = () => undefined): Promise<Outcome> {
  const [a, b] = duplexPair();
  const cfs = new FramedSocket(a, handshakeBytesMax);
  const sfs = new FramedSocket(b, handshakeBytesMax);
  const clientIdentity = generateIdentity();
  const c = connectHandshake(cfs, {
    mode: 'peer', verifyServer: fakeVerify, timeoutMs: 1000, self: { identity: clientIdentity, attest: fakeAttest, ring: clientRing },
  });
  const s = acceptHandshake(sfs, {
    identity: generateIdentity(), attest: (n, k) => (onServerAttest(), fakeAttest(n, k)), verifyPeer: fakeVerify, verifyPrincipal: (p, m, sig) => verifyEd25519(p, m, sig),
    ring: serverRing, timeoutMs: 1000,
  });
  c.catch(() => cfs.destroy());
  s.catch(() => sfs.destroy());
  const [client, server] = await Promise.allSettled([c, s]);
  if (client.status === 'fulfilled') client.value.session.close();
  if (server.status === 'fulfilled' && server.value.kind === 'session') server.value.session.close();
  return { client, server };
}

async function clientHandshake(serverRing: RingOption, expectRing: Buffer): Promise<Outcome> {
  const [a, b] = duplexPair();
  const cfs = new FramedSocket(a, handshakeBytesMax);
  const sfs = new FramedSocket(b, handshakeBytesMax);
  const c = connectHandshake(cfs, { mode: 'client', verifyServer: fakeVerify, timeoutMs: 1000, expectRing });
  const s = acceptHandshake(sfs, {
    identity: generateIdentity(), attest: fakeAttest, verifyPeer: fakeVerify, verifyPrincipal: () => false, ring: serverRing, timeoutMs: 1000,
  });
  c.catch(() => cfs.destroy());
  s.catch(() => sfs.destroy());
  const [client, server] = await Promise.allSettled([c, s]);
  if (client.status === 'fulfilled') client.value.session.close();
  if (server.status === 'fulfilled' && server.value.kind === 'session') server.value.session.close();
  return { client, server };
}

function code(r: PromiseSettledResult<unknown>): string {
  if (r.status === 'fulfilled') return 'ACCEPTED';
  return (r.reason as EkvError).code;
}

const ringA = ringCredential(randomBytes(32));
const ringB = ringCredential(randomBytes(32));
/** Knows ring A's public id but not its secret: a relabelled node of another deployment. */
const forgedA = { id: ringA.id, macKey: ringB.macKey };

afterEach(() => {
  ringChecks.connect = true;
  ringChecks.accept = true;
});

describe('peer handshake between rings', () => {
  it('two members of one ring become peers', async () => {
    const o = await peerHandshake(ringA, ringA);
    expect(code(o.client)).toBe('ACCEPTED');
    expect(code(o.server)).toBe('ACCEPTED');
    const accepted = (o.server as PromiseFulfilledResult<Accepted>).value;
    expect(accepted.kind === 'session' && accepted.peer !== null).toBe(true);
  });

  it('a peer of another ring connecting in is refused by the accepting side at its hello, before any NSM work', async () => {
    let attests = 0;
    const o = await peerHandshake(ringA, ringB, () => attests++);
    expect(code(o.server)).toBe('WRONG_RING');
    expect((o.server as PromiseRejectedResult).reason.message).toMatch(/peer hello without proof of the ring secret/);
    expect(attests).toBe(0);
  });

  it('a peer of another ring connecting in is refused by the connecting side (server ring id)', async () => {
    ringChecks.accept = false; // the server is of another deployment: only the connecting side's rule counts
    const o = await peerHandshake(ringA, ringB);
    expect(code(o.client)).toBe('WRONG_RING');
    expect(code(o.server)).not.toBe('ACCEPTED');
  });

  it('a server that claims our ring id without the secret is refused (its MAC is wrong)', async () => {
    ringChecks.accept = false; // the forged server skips its own checks
    const o = await peerHandshake(forgedA, ringA);
    expect(code(o.client)).toBe('WRONG_RING');
    expect((o.client as PromiseRejectedResult).reason.message).toMatch(/did not prove the ring secret/);
  });

  it('the accepting side refuses a connecting peer whose MAC is of another secret, even if that peer skips its own check', async () => {
    ringChecks.connect = false; // the connecting enclave is of another deployment: only the accepting side's rule counts
    const o = await peerHandshake(ringA, forgedA);
    expect(code(o.server)).toBe('WRONG_RING');
    ringChecks.connect = true;
    // The same with no ring at all (no MAC in the finish).
    ringChecks.connect = false;
    const none = await peerHandshake(ringA, null);
    expect(code(none.server)).toBe('WRONG_RING');
  });

  it('a ringless node and a ringed node are not peers, either way', async () => {
    expect(code((await peerHandshake(ringA, null)).server)).toBe('WRONG_RING'); // its hello has no MAC
    expect(code((await peerHandshake(null, ringA)).client)).toBe('WRONG_RING');
    ringChecks.accept = false;
    expect(code((await peerHandshake(ringA, null)).client)).toBe('WRONG_RING');
    expect(code((await peerHandshake(null, null)).server)).toBe('ACCEPTED');
  });

  it('control: with the checks switched off (the seam), a peer of another ring is accepted on both sides', async () => {
    ringChecks.connect = false;
    ringChecks.accept = false;
    const o = await peerHandshake(ringA, ringB);
    expect(code(o.client)).toBe('ACCEPTED');
    expect(code(o.server)).toBe('ACCEPTED');
  });
});

describe('a client pinned to a ring id', () => {
  it('accepts a node of its ring and reads the signed ring id', async () => {
    const o = await clientHandshake(ringA, ringA.id);
    expect(code(o.client)).toBe('ACCEPTED');
    expect((o.client as PromiseFulfilledResult<ConnectResult>).value.ring).toEqual(ringA.id);
  });

  it('refuses a node of another ring, and a node with no ring, with WRONG_RING', async () => {
    expect(code((await clientHandshake(ringB, ringA.id)).client)).toBe('WRONG_RING');
    expect(code((await clientHandshake(null, ringA.id)).client)).toBe('WRONG_RING');
  });

  it('control: with the check switched off, the node of another ring is accepted', async () => {
    ringChecks.connect = false;
    expect(code((await clientHandshake(ringB, ringA.id)).client)).toBe('ACCEPTED');
  });
});

// Issue 10 item 6: a hello's mode is a claim. Hellos claiming 'peer' without the ring MAC, and the host's
// replays of a captured genuine peer hello, must not take the peer-reserved handshake slots; a genuine peer
// is still admitted. Real acceptHandshake + HandshakeAdmission (the enclave server's wiring), in memory.
describe('peer-reserved handshake slots', () => {
  const limits = { awaitingHelloMax: 64, anonymousHandshakesMax: 2, peerHandshakesMax: 2, clientSessionsMax: 8 };

  function acceptInto(admission: HandshakeAdmission, ring: RingOption, attests: { n: number }) {
    const [a, b] = duplexPair();
    const sfs = new FramedSocket(b, handshakeBytesMax);
    const conn = {};
    admission.connected(conn, () => sfs.destroy());
    let ticket: { release(): void } | null = null;
    const s = acceptHandshake(sfs, {
      identity: generateIdentity(), attest: (n, k) => (attests.n++, fakeAttest(n, k)), verifyPeer: fakeVerify, verifyPrincipal: () => false,
      ring, timeoutMs: 5000, admit: (m, p) => (ticket = admission.admit(conn, m, p)),
    });
    const settled = s.finally(() => ticket?.release());
    settled.catch(() => undefined);
    return { client: new FramedSocket(a, handshakeBytesMax), server: settled, close: () => { sfs.destroy(); admission.disconnected(conn); } };
  }

  it('a flood of unproven peer hellos and replays of a genuine one leaves the peer slots to genuine peers', async () => {
    const admission = new HandshakeAdmission(limits, { finishGraceMs: 60_000 });
    const attests = { n: 0 };
    const opened: Array<{ close(): void }> = [];
    try {
      // The host captures one genuine peer hello (ring A) on its way.
      const [ca, cb] = duplexPair();
      const captureConn = connectHandshake(new FramedSocket(ca, handshakeBytesMax), {
        mode: 'peer', verifyServer: fakeVerify, timeoutMs: 1000, self: { identity: generateIdentity(), attest: fakeAttest, ring: ringA },
      });
      captureConn.catch(() => undefined);
      const captured = await new FramedSocket(cb, handshakeBytesMax).next(1000);
      ca.destroy();
      // Flood: hellos claiming peer with no MAC, with a made-up MAC, and the captured one replayed.
      const outcomes: Array<Promise<string>> = [];
      const send = (bytes: Buffer) => {
        const c = acceptInto(admission, ringA, attests);
        opened.push(c);
        c.client.write(bytes);
        outcomes.push(c.server.then(() => 'ACCEPTED', (e: EkvError) => `${e.code}/${e.reason ?? ''}`));
      };
      for (let i = 0; i < 8; i++) {
        send(encodeCbor({ t: 'hello', v: protocolVersion, mode: 'peer', nonce: randomBytes(32), eph: randomBytes(32) }));
        send(encodeCbor({ t: 'hello', v: protocolVersion, mode: 'peer', nonce: randomBytes(32), eph: randomBytes(32), ts: Date.now(), pmac: randomBytes(32) }));
        send(captured);
      }
      await new Promise((r) => setTimeout(r, 50));
      // The captured hello's first copy holds one peer slot (until its finish grace); nothing else does.
      expect(admission.stats.handshakes).toEqual({ anonymous: 0, peer: 1 });
      // Genuine peers (ring A) are still admitted and become peers.
      for (let i = 0; i < 2; i++) {
        const g = acceptInto(admission, ringA, attests);
        opened.push(g);
        const c = connectHandshake(g.client, {
          mode: 'peer', verifyServer: fakeVerify, timeoutMs: 2000, self: { identity: generateIdentity(), attest: fakeAttest, ring: ringA },
        });
        const [client, server] = await Promise.allSettled([c, g.server]);
        expect(code(client)).toBe('ACCEPTED');
        expect(code(server)).toBe('ACCEPTED');
        const acc = (server as PromiseFulfilledResult<Accepted>).value;
        expect(acc.kind === 'session' && acc.peer !== null).toBe(true);
        if (acc.kind === 'session') acc.session.close();
        (client as PromiseFulfilledResult<ConnectResult>).value.session.close();
      }
      // The refusals were for lack of proof, or as replays, before any NSM work (one attestation for the
      // first copy of the captured hello, which waits for a finish that never comes, one per genuine peer).
      const codes = await Promise.all(outcomes.map((o, i) => (i === 2 ? Promise.resolve('first copy') : o)));
      expect(codes.filter((c) => c === 'WRONG_RING/').length).toBe(16);
      expect(codes.filter((c) => c === 'UNAVAILABLE/REPLAYED_HELLO').length).toBe(7);
      expect(attests.n).toBe(3);
    } finally {
      for (const c of opened) c.close();
    }
  });
});
