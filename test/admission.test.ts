// Admission of unauthenticated work (enclave/admission.ts, issue 10 item 6): the bookkeeping alone.
// The flood against a real ring is test/attacks/hello-flood.test.ts.
import { describe, expect, it } from 'vitest';
import { HandshakeAdmission, handshakeAttestationsMax } from '../enclave/admission.ts';
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
    expect(busy(() => a.admit(p1!.conn, 'peer'))).toBe('ADMITTED');
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
    a.admit(cs[2]!.conn, 'peer');
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
    expect(busy(() => a.admit(c3!.conn, 'peer'))).toBe('ADMITTED');
    a.disconnected(c1!.conn);
    expect(a.stats.clientSessions).toBe(1);
  });

  it('inbound handshakes can never fill the NSM queue', () => {
    expect(handshakeAttestationsMax).toBeLessThan(nsmPendingMax);
  });
});
