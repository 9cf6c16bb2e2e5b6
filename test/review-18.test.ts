// Review 18: today's merges (node-wide client answer memory; B7c' a restarted node's own copy of a retired member's
// witness; review-17's client ring learning, floor and ACL checks; review-16 F4's conditional-write read check),
// reviewed as a hostile host and a hostile client.
//
// F1 (medium): the answer memory's eviction took "stalled" to mean "its unread answers have not been EMPTY for
//     stallMs". A client that pipelines (several large gets in flight, the SDK's mget, a bulk reader on a
//     throughput-bound link) takes every answer within a fraction of a second yet may never see its queue empty:
//     under pressure it was "stalled" for as long as it had been reading, and it was the session closed, while a
//     hostile client that holds most of the pool and empties its queue once every stallMs - 1 was not. A hostile client
//     alone (trickle-reading sessions) thus got an honest bulk reader closed (SLOW_READER) over and over. Fix: a
//     session is late by the age of the OLDEST byte it has not taken (a FIFO of queue times per meter, coalesced per
//     10 ms), not by the time since its queue was last empty: a prompt pipelining reader is never stalled; one that
//     leaves any answer unread for stallMs is, as before.
// F2 (low): every write completion or close that made room woke EVERY waiting session (each re-ran its pump, tried
//     to reserve, failed, re-registered and asked the pool to relieve): with thousands of sessions held by the bound,
//     thousands of pumps per turn of the event loop for room for one answer. Fix: waiters are woken oldest first
//     only while there is room for another answer; the rest stay registered (no wake-up lost: the next room wakes
//     them).
// F3 (medium): review-17 F1 keeps the ring a client met first in its floor file (`ring`). A floor file written
//     before that (every existing `<cluster>.floor`) has no `ring`, although its `rings` and keys are the client's
//     history with the real ring: the first command after the upgrade learnt whichever node the host showed first,
//     so a wiped node that founded anew answered NOT_FOUND for keys the client had written (exactly F1's attack,
//     once), and that ring was then written as the learnt one, refusing the real ring (WRONG_RING) from then on.
//     Fix: a file without `ring` learns the ring its `rings` touched last.
// F4 (low): B7c' keeps, from a retiring member's heartbeat, its witness of this node; a list with no entry for this
//     node was kept as "witnessed nothing" (position 0, never behind). But the list is the first witnessesMax (65,536)
//     entries of the retiring node's witness map: past that many peer names over the ring's life (a host that churns
//     joins), a node cut off the list got a copy that admits any rollback of it. Fix: a missing entry counts as
//     position 0 only when the list is whole; a cut list keeps no copy (the boot waits for a peer's answer).
// F5 (medium, availability; host-triggerable): the B7c' copy keeps the boot that made the position the retired member
//     witnessed; restart checks read it against the boot history, which keeps the newest bootHistoryMax (64) boots.
//     The copy never changes (its member is gone), so 64 restarts later its boot is no longer in the history and the
//     copy reads as a fork's position: the restart takes a new incarnation (the member's state is discarded), and at
//     every copy holder restarted at once (a whole-range restart) the range is lost. The host picks restarts. Fix:
//     replayed at its record's position, a copy this log then held is kept as a plain position (boot 0): every log
//     that holds the record holds that prefix, so nothing is lost to the check; one it did not hold is kept as is.
//     NOT FIXED, the same cause outside B7c' (pre-existing, boot fencing): in an idle range (no votes), peers' live
//     witness of a member stays at its last vote's boot, and 65 restarts later the same false rollback follows
//     (it.fails below).
// F6 (low): the SDK's trust policy keys PCRs by string and the verifier reads each as Number(key): '00', '0x0', ' 0'
//     also pin PCR0 (the later key wins), while checkTrustPolicy (PCR0 pinned? zeros with allowDebug? review-17 F4)
//     reads only '0'. `{ '0': image, '0x0': zeros }` with allowDebug passed as pinned and let every debug-mode
//     enclave of every image in. Fix: PCR indices must be plain decimals 0..31 (BAD_REQUEST otherwise).
// F7 (low): a session refused for want of node-wide room registers a wake-up with the pool; one that closed before
//     room was made stayed registered (its closure keeps the session, its socket and decoder buffers reachable)
//     until the next wake. While the node stays full, sessions that ask and hang up pile up there. Fix: the wake-up
//     is registered with the session's meter and dropped when it closes.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AnswerMemory, answerReserveBytes } from '../protocol/answer-memory.ts';
import { Floor } from '../client/floor.ts';
import { checkTrustPolicy } from '../client/trust.ts';
import { EkvError } from '../protocol/errors.ts';
import { witnessesMax } from '../enclave/data/codec.ts';
import { retireMembers, startedNet } from './helpers/retire-net.ts';

const R = answerReserveBytes;
const dir = mkdtempSync(join(tmpdir(), 'ekv-rev18-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('review-18 F1: a pipelining reader that takes every answer promptly is never the session closed', () => {
  it('honest: each answer taken 300 ms after it was queued, its queue never empty; trickle: holds most, empties every 1.5 s; sink: never reads', () => {
    let t = 0;
    const pool = new AnswerMemory({ bytesMax: 12 * R, stallMs: 2000, relieveEveryMs: 0, now: () => t });
    const closed: string[] = [];
    const honest = pool.open(() => closed.push('honest'));
    const trickle = pool.open(() => closed.push('trickle'));
    const sink = pool.open(() => closed.push('sink'));
    sink.queued(R / 2); // at t = 0, never taken
    const pending: Array<{ at: number; n: number }> = [];
    for (t = 0; t <= 3000; t += 100) {
      honest.queued(R / 2);
      pending.push({ at: t, n: R / 2 });
      while ((pending[0] as { at: number }).at <= t - 300) honest.written((pending.shift() as { n: number }).n);
      if (t % 1500 === 0) {
        if (trickle.unread > 0) trickle.written(trickle.unread);
        trickle.queued(8 * R);
      }
    }
    t = 3000;
    expect(honest.unread).toBeGreaterThan(0); // it never emptied its queue, yet nothing it holds is older than 300 ms
    // Pressure: the one that does not read goes first (before the fix as well).
    expect(pool.relieve()).toBe(true);
    expect(closed).toEqual(['sink']);
    // Then nobody is stalled: the honest reader is not closed (before the fix: closed, 'honest' evicted here).
    t = 3100;
    expect(pool.relieve()).toBe(false);
    expect(closed).toEqual(['sink']);
    // Control: the honest reader stops reading: 2 s after its oldest unread answer it is stalled like any other.
    t = 4500;
    trickle.written(trickle.unread); // the trickle holder keeps reading every 1.5 s
    trickle.queued(8 * R);
    t = 5100;
    expect(pool.relieve()).toBe(true);
    expect(closed).toEqual(['sink', 'honest']);
    trickle.close();
    expect(pool.used).toBe(0);
  });

  it('accounting: partial writes across coalesced entries keep the age of the oldest unread byte, and empty the queue exactly', () => {
    let t = 0;
    const pool = new AnswerMemory({ bytesMax: 64 * R, stallMs: 1000, relieveEveryMs: 0, now: () => t });
    const m = pool.open(() => undefined);
    m.queued(100); // at 0
    t = 5;
    m.queued(50); // coalesced with the one at 0
    t = 500;
    m.queued(70);
    expect(m.stalledSince()).toBe(0);
    m.written(120); // the first 150 are not all taken
    expect(m.stalledSince()).toBe(0);
    m.written(30);
    expect(m.stalledSince()).toBe(500);
    t = 900;
    m.written(70);
    expect(m.unread).toBe(0);
    expect(m.stalledSince()).toBe(900);
    m.close();
    expect(pool.used).toBe(0);
  });
});

describe('review-18 F2: room for one answer wakes one waiting session, not all of them', () => {
  it('1,000 sessions waiting on a full pool; room for one: at most a few wake-ups, and none lost for the next room', async () => {
    const pool = new AnswerMemory({ bytesMax: 4 * R, now: () => 0 });
    const filler = pool.open(() => undefined);
    for (let i = 0; i < 4; i++) expect(filler.tryReserve()).toBe(true);
    let wakes = 0;
    let taken = 0;
    const meters = Array.from({ length: 1000 }, () => pool.open(() => undefined));
    for (const m of meters) {
      const wake = (): void => {
        wakes++;
        if (m.tryReserve()) taken++;
        else pool.pressed(wake); // as serveRpc does: wait again
      };
      expect(m.tryReserve()).toBe(false);
      pool.pressed(wake);
    }
    filler.unreserve(1);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(taken).toBe(1);
    expect(wakes).toBeLessThanOrEqual(4); // before the fix: 1,000 (every waiter, each failing but one)
    filler.unreserve(1);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(taken).toBe(2); // the next room reaches a waiter still registered
    expect(pool.used).toBe(4 * R);
  });
});

describe('review-18 F3: a floor file from before the learnt ring keeps the client on the ring it knows', () => {
  it('a file with rings and keys but no `ring`: the ring it touched last is the learnt one', () => {
    const old = 'c'.repeat(64);
    const real = 'a'.repeat(64);
    const file = join(dir, 'old.floor');
    writeFileSync(file, JSON.stringify({ version: 1, rings: { [old]: 0, [real]: 0 }, keys: [[real, 'f'.repeat(32), 3, null]] }));
    const floor = new Floor({ file });
    expect(floor.learntRing).toBe(real); // before the fix: null (the first node the host shows is learnt)
    // A file that names its ring keeps it; a file with no ring at all learns nothing.
    writeFileSync(file, JSON.stringify({ version: 1, rings: { [real]: 0, [old]: 0 }, keys: [], ring: real }));
    expect(new Floor({ file }).learntRing).toBe(real);
    writeFileSync(file, JSON.stringify({ version: 1, rings: {}, keys: [] }));
    expect(new Floor({ file }).learntRing).toBe(null);
  });
});

describe("review-18 F4: B7c' takes a retiring member's missing entry for this node as 'witnessed nothing' only from a whole list", () => {
  it('a retiring heartbeat whose witness list was cut at witnessesMax without this node: no copy kept (before: a copy of position 0, never behind)', () => {
    const net = startedNet(retireMembers(['a', 'b', 'c', 'd']));
    const y = net.node('a') as unknown as {
      noteRetired(name: string, inc: number, handed: ReadonlyArray<readonly [string, number, number, number]>): void;
      witness: Map<string, { mine: unknown; handed: boolean }>;
    };
    // What b's retiring heartbeat carries when its witness map outgrew the list's bound: the first witnessesMax
    // entries (insertion order), this node's cut off.
    const cut = Array.from({ length: witnessesMax }, (_, i) => [`gone-${i}`, 1, 5, 0] as const);
    y.noteRetired('b', 1, cut);
    expect(y.witness.get('b')?.handed).toBe(true);
    expect(y.witness.get('b')?.mine).toBe(null); // before the fix: { inc: 0, pos: 0, posBoot: 0 }
    // Control: a whole list without this node (b witnessed nothing of it): kept as position 0, as b's answer would be.
    const z = net.node('c') as unknown as typeof y;
    z.noteRetired('b', 1, [['d', 1, 5, 0]]);
    expect(z.witness.get('b')?.mine).toEqual({ inc: 0, pos: 0, posBoot: 0 });
  });
});

describe("review-18 F5: a B7c' copy stays good however many boots later (the boot history keeps 64)", () => {
  /** z retires reaching only y (as in data-retire's B7c' tests): y alone holds z's witnesses, with the copy. */
  function soleHolder() {
    const net = startedNet(retireMembers(['a', 'b', 'c', 'd']));
    const oName = net.owner() as string;
    const others = (net.node(oName).configOf(0)?.members ?? []).map((m) => m.name).filter((n) => n !== oName);
    const [z, yName] = others as [string, string];
    net.cut = (f, t) => f === oName || t === oName || (f === z && t !== yName) || (t === z && f !== yName);
    expect(net.node(z).retire()).toBe(true);
    net.run(10);
    net.down.add(z);
    net.cut = () => false;
    return { net, yName };
  }

  it('y restarts 70 times with writes in between (its peers witness each boot): the same member each time (before: the 65th restart took a new incarnation)', () => {
    const { net, yName } = soleHolder();
    const leaseTicks = net.config.leaseTicks;
    let session = 0;
    for (let i = 1; i <= 70; i++) {
      net.down.add(yName);
      net.run(leaseTicks + 10);
      const y = net.restart(yName);
      for (let j = 0; j < 4 * leaseTicks && y.checkingState; j++) net.run(1);
      expect({ restart: i, checking: y.checkingState, inc: y.self.inc }).toEqual({ restart: i, checking: false, inc: 1 });
      // A write the range acknowledges: y's acknowledgement raises its peers' witness of it to this boot.
      let owner: string | null = null;
      for (let j = 0; j < 300 && owner === null; j++) {
        net.run(1);
        owner = net.owner();
      }
      const o = net.ask(owner as string, { kind: 'open', shard: 0, principal: 'p' }, 200) as { ok: boolean; session?: number };
      session = o.session ?? session;
      expect(net.ask(owner as string, { kind: 'put', key: `k${i}`, value: 'v', ifVersion: null, session, seq: 1, floor: 1, principal: 'p' }, 200)).toMatchObject({ ok: true });
    }
  }, 30_000);

  // NOT FIXED (pre-existing, boot fencing): a member of an idle range (no votes, so its peers' witness of it stays at
  // the position and boot of its last vote) restarted more than bootHistoryMax (64) times no longer finds that boot in
  // its history, reads the witness as a fork's position, and takes a new incarnation; two members of one idle range
  // at once lose the range (unavailable). The host chooses restarts. A fix needs the boot history to keep every boot
  // a peer may still name (e.g. never drop the boot of the node's newest acknowledged position), or peers to raise
  // their witness at each admitted boot; not done here.
  it.fails('an idle range: y restarted 70 times stays the same member (fails: the 65th restart takes a new incarnation)', () => {
    const net = startedNet(retireMembers(['a', 'b', 'c', 'd']));
    const oName = net.owner() as string;
    const yName = ((net.node(oName).configOf(0)?.members ?? []).map((m) => m.name).filter((n) => n !== oName)[0]) as string;
    const leaseTicks = net.config.leaseTicks;
    for (let i = 1; i <= 70; i++) {
      net.down.add(yName);
      net.run(leaseTicks + 10);
      const y = net.restart(yName);
      for (let j = 0; j < 4 * leaseTicks && y.checkingState; j++) net.run(1);
      expect({ restart: i, inc: y.self.inc }).toEqual({ restart: i, inc: 1 });
    }
  }, 30_000);
});

describe('review-18 F6: a PCR index is a plain decimal, so no second spelling of PCR0 escapes the policy checks', () => {
  const image = 'ab'.repeat(48);
  const zeros = '00'.repeat(48);
  const refusal = (p: Parameters<typeof checkTrustPolicy>[0]): string => {
    try {
      checkTrustPolicy(p);
      return 'accepted';
    } catch (err) {
      return err instanceof EkvError ? err.code : `untyped ${String(err)}`;
    }
  };
  it("{ '0': image, '0x0': zeros } with allowDebug is refused (before: accepted, and the verifier pinned PCR0 to zeros)", () => {
    expect(refusal({ pcrs: { '0': image, '0x0': zeros }, allowDebug: true })).toBe('BAD_REQUEST');
    for (const k of ['00', ' 0', '0.0', '1e1', '32', '-1']) expect(refusal({ pcrs: { '0': image, [k]: image } })).toBe('BAD_REQUEST');
    // Controls: plain indices are accepted as before; zeros with allowDebug still refused; the image's own PCR0 fine.
    expect(refusal({ pcrs: { '0': image, '8': image, '31': image } })).toBe('accepted');
    expect(refusal({ pcrs: { '0': zeros }, allowDebug: true })).toBe('BAD_REQUEST');
    expect(refusal({ pcrs: { '0': image }, allowDebug: true })).toBe('accepted');
  });
});

describe('review-18 F7: a session that closes while waiting for room leaves nothing behind in the pool', () => {
  it('1,000 sessions refused, registered, then closed: none of their wake-ups is kept or run when room is made', async () => {
    const pool = new AnswerMemory({ bytesMax: 4 * R, now: () => 0 });
    const filler = pool.open(() => undefined);
    for (let i = 0; i < 4; i++) expect(filler.tryReserve()).toBe(true);
    let deadWakes = 0;
    for (let i = 0; i < 1000; i++) {
      const m = pool.open(() => undefined);
      expect(m.tryReserve()).toBe(false);
      pool.pressed(() => deadWakes++, m); // (each wake-up holds its whole session in serveRpc)
      m.close(); // the client hung up
    }
    filler.close(); // room
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(deadWakes).toBe(0); // before the fix: 1,000 (kept until room was made, then run)
    expect(pool.used).toBe(0);
  });
});
