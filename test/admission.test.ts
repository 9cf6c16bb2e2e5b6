// Admission of unauthenticated work (enclave/admission.ts, issue 10 item 6): the bookkeeping alone.
// The flood against a real ring is test/attacks/hello-flood.test.ts.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { HandshakeAdmission, handshakeAttestationsMax, peerHelloWindowMs } from '../enclave/admission.ts';
import type { PeerHelloProof } from '../protocol/handshake.ts';
import { nsmPendingMax } from '../enclave/nsm.ts';

const limits = { awaitingHelloMax: 3, anonymousHandshakesMax: 2, peerHandshakesMax: 1, clientSessionsMax: 2 };

function conns(a: HandshakeAdmission, n: number): Array<{ conn: object; closed: () => boolean }> {
  return Array.from({ length: n }, () => {
    const conn = {};
    let closed = false;
    a.connected(conn, () => {
      closed = true;
      a.disconnected(conn);
    });
    return { conn, closed: () => closed };
  });
}

/** What protocol/handshake.ts hands over for a peer hello whose MAC proved the ring secret. */
const proof = (sentAtMs = Date.now()): PeerHelloProof => ({ nonce: randomBytes(32), sentAtMs });

const busy = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return `${(err as { code?: string }).code}/${(err as { reason?: string }).reason}`;
  }
  return 'ADMITTED';
};

describe('handshake admission', () => {
  it('anonymous hellos beyond their share are refused BUSY before any work; the peer share stays free', () => {
    const a = new HandshakeAdmission(limits);
    const [c1, c2, c3, p1] = conns(a, 4);
    a.admit(c1!.conn, 'client');
    a.admit(c2!.conn, 'attest');
    expect(busy(() => a.admit(c3!.conn, 'client'))).toBe('UNAVAILABLE/BUSY');
    expect(busy(() => a.admit(p1!.conn, 'peer', proof()))).toBe('ADMITTED');
    expect(a.stats.refusedBusy).toEqual({ anonymous: 1, peer: 0 });
  });

  it('when full, the oldest handshake waiting for its finish past the grace is closed to make room; one still attesting never is', () => {
    let now = 0;
    const a = new HandshakeAdmission(limits, { now: () => now, finishGraceMs: 1000 });
    const [c1, c2, c3, c4] = conns(a, 4);
    const t1 = a.admit(c1!.conn, 'client');
    const t2 = a.admit(c2!.conn, 'client');
    expect(busy(() => a.admit(c3!.conn, 'client'))).toBe('UNAVAILABLE/BUSY'); // both still in their NSM attestation
    now = 10;
    t2.attested();
    t1.attested();
    now = 1005;
    expect(busy(() => a.admit(c3!.conn, 'client'))).toBe('UNAVAILABLE/BUSY'); // within its grace, the caller may still finish
    now = 1010;
    expect(busy(() => a.admit(c3!.conn, 'client'))).toBe('ADMITTED');
    expect([c1!.closed(), c2!.closed()]).toEqual([true, false]); // the oldest waiting one went
    t1.release(); // releasing an evicted ticket changes nothing
    expect(a.stats.handshakes.anonymous).toBe(2);
    expect(busy(() => a.admit(c4!.conn, 'client'))).toBe('ADMITTED');
    expect(c2!.closed()).toBe(true);
  });

  it('connections without a hello are bounded: the oldest is pushed out', () => {
    const a = new HandshakeAdmission(limits);
    const cs = conns(a, 4);
    expect(cs.map((c) => c.closed())).toEqual([true, false, false, false]);
    expect(a.roomForConnection(10, 10)).toBe(true); // by closing the oldest still waiting for its hello
    expect(cs.map((c) => c.closed())).toEqual([true, true, false, false]);
    a.admit(cs[2]!.conn, 'peer', proof());
    a.admit(cs[3]!.conn, 'client');
    expect(a.roomForConnection(10, 10)).toBe(false); // everyone is further along: refuse the new one
  });

  it('client sessions are bounded; peers are not counted against them', () => {
    const a = new HandshakeAdmission(limits);
    const [c1, c2, c3] = conns(a, 3);
    for (const c of [c1!, c2!]) {
      a.admit(c.conn, 'client').release();
      a.established(c.conn, 'client');
    }
    expect(busy(() => a.admit(c3!.conn, 'client'))).toBe('UNAVAILABLE/BUSY');
    expect(busy(() => a.admit(c3!.conn, 'peer', proof()))).toBe('ADMITTED');
    a.disconnected(c1!.conn);
    expect(a.stats.clientSessions).toBe(1);
  });

  it('a hello that only claims peer (no proof) is anonymous; a replayed or stale proven peer hello is refused before any work', () => {
    let wall = 1_000_000_000;
    const a = new HandshakeAdmission(limits, { wallNow: () => wall });
    const [u1, u2, u3, p1, r1, s1, p2] = conns(a, 7);
    // Claims without proof take anonymous slots, then are refused BUSY: never the peer slot.
    a.admit(u1!.conn, 'peer');
    a.admit(u2!.conn, 'peer');
    expect(busy(() => a.admit(u3!.conn, 'peer'))).toBe('UNAVAILABLE/BUSY');
    expect(a.stats.handshakes).toEqual({ anonymous: 2, peer: 0 });
    // A proven hello takes the peer slot; its replay (same nonce) is refused, as is one outside the window.
    const genuine = proof(wall);
    const t = a.admit(p1!.conn, 'peer', genuine);
    expect(a.stats.handshakes.peer).toBe(1);
    t.release();
    expect(busy(() => a.admit(r1!.conn, 'peer', { ...genuine }))).toBe('UNAVAILABLE/REPLAYED_HELLO');
    expect(busy(() => a.admit(s1!.conn, 'peer', proof(wall - peerHelloWindowMs - 1)))).toBe('UNAVAILABLE/STALE_HELLO');
    expect(a.stats.handshakes.peer).toBe(0);
    // Later, the old hello is out of the window: still refused; a fresh one is admitted.
    wall += 2 * peerHelloWindowMs;
    expect(busy(() => a.admit(r1!.conn, 'peer', { ...genuine }))).toBe('UNAVAILABLE/STALE_HELLO');
    expect(busy(() => a.admit(p2!.conn, 'peer', proof(wall)))).toBe('ADMITTED');
    expect(a.refusedPeerReplays).toBe(3);
  });

  it('inbound handshakes can never fill the NSM queue', () => {
    expect(handshakeAttestationsMax).toBeLessThan(nsmPendingMax);
  });
});
