// Review 16: the session's changes (rule L1 stand-alone, rcvAlive, idle-session eviction, write-buffer bound,
// ACL proposal checks, range key counter), reviewed as a hostile host and a hostile client.
//
// F1 (medium): limitWriteBuffer closes a client session past 64 MiB of queued answers, and pauses its reading past
//     16 MiB. But the pause only stops *new* requests from being read: every request already read (a whole frame
//     of up to 256 messages, and up to inflightMax = 4096 in flight) still produces its answer. A client that reads
//     its answers continuously but asks for more than 64 MiB at once (the SDK's own mget over large values, or
//     Promise.all of gets: one frame of requests) has its session closed; the SDK retries CLOSED and is closed
//     again (livelock for a legitimate client). Fix: a client session takes a request only while its answers in
//     flight and queued fit the bound (protocol/rpc.ts answer budget), holding the rest unread.
import net from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EkvError } from '../protocol/errors.ts';
import { EnclaveServer } from '../enclave/server.ts';
import { RpcClient } from '../protocol/rpc.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('review-16 F1: a client that reads its answers is not closed for asking more than the write bound at once', () => {
  const answerBytes = 512 * 1024;
  let server: EnclaveServer;
  let open: Awaited<ReturnType<typeof fakeEnclaveServer>>['open'];
  let stop: () => Promise<void>;

  beforeAll(async () => {
    ({ server, open, stop } = await fakeEnclaveServer('ekv-rev16-', (op) => (op === 'status' ? { up: 1 } : { v: Buffer.alloc(answerBytes, 7) })));
  });

  afterAll(() => stop());

  it('200 gets of 512 KiB (100 MiB) asked at once by a reading client: every one answered, the session kept', async () => {
    const { session } = await open();
    const rpc = new RpcClient(session);
    try {
      const answers = await Promise.all(Array.from({ length: 200 }, () => rpc.call('get', { k: Buffer.from('k') }, 30_000).then((a) => (a.v as Uint8Array).length, (e: EkvError) => e.code)));
      expect(answers.filter((a) => a !== answerBytes)).toEqual([]);
    } finally {
      rpc.close();
    }
  }, 40_000);

  it('control: 4000 small requests pipelined on one client session are all answered, promptly', async () => {
    const { session } = await open();
    const rpc = new RpcClient(session);
    try {
      const t0 = Date.now();
      const answers = await Promise.all(Array.from({ length: 4000 }, () => rpc.call('status', {}, 30_000).then(() => 1, (e: EkvError) => e.code)));
      expect(answers.filter((a) => a !== 1)).toEqual([]);
      expect(Date.now() - t0).toBeLessThan(20_000);
    } finally {
      rpc.close();
    }
  }, 40_000);

  it('still bounded: 400 gets never read keep at most the bound queued (the rest held unread)', async () => {
    const { socket, session } = await open();
    socket.pause();
    const sockets = (server as unknown as { sockets: Set<net.Socket> }).sockets;
    let peak = 0;
    const sampler = setInterval(() => {
      for (const s of sockets) peak = Math.max(peak, s.writableLength);
    }, 2);
    try {
      for (let i = 1; i <= 400; i++) session.send({ i, o: 'get', k: Buffer.from('k') });
      await sleep(1500);
    } finally {
      clearInterval(sampler);
    }
    expect(peak).toBeLessThanOrEqual(64 * 1024 * 1024);
    // Held, not answered: nothing more is queued while the client does not read (it may be closed later or not).
    socket.destroy();
  });
});

// F2 (medium, liveness): rule L1's candidates include nodes in recovery mode (docs/recovery.md). Such a node has
//     not started its ring: its status answers `ring: 'active'` (a RingNode's initial state) with no successors,
//     and it refuses every ring operation but status. rejoin.ts's `joinable` took that for an active node: a node
//     stuck joining (or alone, with the recovery-mode node's id lower) rejoined through it every 6 s and never
//     stood alone, so one member left in recovery mode (the operator opening nodes one at a time, a member whose
//     signers are not there, or an old copy the host starts: it finds no live member and sits in recovery mode)
//     kept every other restarted node joining for good: the stall L1 exists to end. Fix: a candidate whose status
//     says it is in recovery mode is treated as down (neither joined through nor counted as joining).
import { rejoinWhenAlone } from '../enclave/cluster/rejoin.ts';
import { fakeRing, type Ref, until } from './helpers/fake-ring.ts';

describe('review-16 F2: a node in recovery mode is no node to join through', () => {
  const logger = pino({ level: 'silent' });
  const recoveryMode = { ring: 'active', successors: [], recovery: { mode: 'recovery' } };
  const ids: Record<string, bigint> = { 'rec:1': 0n, 'b:1': 5n };
  const peers = {
    identify: async (addr: string) => ids[addr] as bigint,
    call: async (addr: string) => (addr === 'rec:1' ? recoveryMode : { ring: 'joining', successors: [] }) as Record<string, unknown>,
  };

  it('stuck joining, the others joining or in recovery mode: stands alone, never joins through the recovery-mode node', async () => {
    const a = fakeRing({ id: 1n, addr: 'a:1' });
    a.ring.core.status = 'joining';
    a.ring.rejoin = (via: Ref) => void a.joins.push(via); // a join through it never completes (it answers no lookup)
    const r = rejoinWhenAlone({ ring: a.driver, peers, candidates: () => ['rec:1', 'b:1'], logger, everyMs: 5, aloneMs: 5, joiningMs: 20 });
    try {
      await until(() => a.alone.length > 0 || a.joins.length >= 3, 3000);
      expect(a.joins).toEqual([]);
      expect(a.alone).toHaveLength(1);
    } finally {
      r.stop();
    }
  });

  it('alone: does not join a lower-id node in recovery mode', async () => {
    const a = fakeRing({ id: 1n, addr: 'a:1' });
    const r = rejoinWhenAlone({ ring: a.driver, peers, candidates: () => ['rec:1'], logger, everyMs: 5, aloneMs: 5, joiningMs: 20 });
    try {
      await sleep(200);
      expect(a.joins).toEqual([]);
    } finally {
      r.stop();
    }
  });
});

// F3 (low): when the client-session table is full, a client hello closed the session idle longest at once, in
//     admit(), before anything about the newcomer was known: (a) even when the same hello was then refused BUSY
//     because the anonymous handshake slots were full, and (b) for a hello that never completes its handshake. So
//     a stranger without a key closes one idle session per bare hello, for nothing (the genuine owner, back after
//     30 s of quiet, gets CLOSED and handshakes again). Now admit() only checks that a session could give way; the
//     session idle longest is closed when the newcomer's session is established.
import { HandshakeAdmission } from '../enclave/admission.ts';

describe('review-16 F3: an idle session gives way only to a newcomer that got its session', () => {
  const setup = () => {
    let t = 0;
    const a = new HandshakeAdmission({ awaitingHelloMax: 8, anonymousHandshakesMax: 1, peerHandshakesMax: 1, clientSessionsMax: 1 }, { now: () => t, sessionIdleEvictMs: 1000 });
    const mk = () => {
      const conn = {};
      let closed = false;
      a.connected(conn, () => {
        closed = true;
        a.disconnected(conn);
      });
      return { conn, closed: () => closed };
    };
    return { a, mk, advance: (ms: number) => void (t += ms) };
  };

  it('a hello refused BUSY (handshake slots full) closes no session', () => {
    const { a, mk, advance } = setup();
    const idle = mk();
    a.admit(idle.conn, 'client').release();
    a.established(idle.conn, 'client');
    advance(5000);
    const inHandshake = mk();
    a.admit(inHandshake.conn, 'attest').attested(); // holds the one anonymous slot, past its document
    const late = mk();
    expect(() => a.admit(late.conn, 'client')).toThrow(/busy/);
    expect(idle.closed()).toBe(false);
  });

  it('a hello that never completes closes no session; one that does, closes the idle one', () => {
    const { a, mk, advance } = setup();
    const idle = mk();
    a.admit(idle.conn, 'client').release();
    a.established(idle.conn, 'client');
    advance(5000);
    const stranger = mk();
    const t1 = a.admit(stranger.conn, 'client'); // admitted: a session could give way
    expect(idle.closed()).toBe(false);
    t1.release();
    a.disconnected(stranger.conn); // it never finished
    expect(idle.closed()).toBe(false);
    const genuine = mk();
    a.admit(genuine.conn, 'client').release();
    a.established(genuine.conn, 'client');
    expect(idle.closed()).toBe(true);
    expect(a.stats.clientSessions).toBe(1);
  });
});

// F4 (low, fixed): review-14 F5 hides the key's version from a write-only
//     caller's refusals, but a conditional write still answers its condition. A `del` with ifVersion 0 ("only if
//     it has no value") changes nothing either way: on a key with a value it is CONFLICT, on one without it
//     succeeds with d:false. So a write-only principal still learns, for any key name it guesses and with no side
//     effect, whether the key has a value (not how often it was written). Closing it means refusing conditional
//     writes to callers without read, as etcd's Txn requires read for a comparison: enclave/cluster/ops.ts now
//     does (docs/access-control.md). Both probes are FORBIDDEN; an unconditional write still succeeds.
import { DataNet, fast } from './helpers/data-net.ts';
import { randomBytes } from 'node:crypto';

describe('review-16 F4: a write-only caller\'s conditional delete is an existence oracle', () => {
  let net: DataNet | undefined;
  afterAll(() => net?.stop());
  it('del with ifVersion 0 does not tell a write-only principal whether a key has a value', async () => {
    const writer = randomBytes(32);
    const writeOnly = new Set([writer.toString('hex')]);
    net = new DataNet();
    await net.start(3, fast, {
      check: (op, _key, principal) => {
        if (op === 'get' && principal && writeOnly.has(principal.toString('hex'))) throw new EkvError('FORBIDDEN', 'access denied');
      },
    });
    await net.formed();
    const alice = randomBytes(32);
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    const as = (await net.call(owner, 'open', { k: key }, alice)).s as number;
    await net.call(owner, 'put', { k: key, v: Buffer.from('v1'), s: [as, 1, 1] }, alice);
    const probe = async (name: string, seq: number) => {
      const k = Buffer.from(name);
      const o = net!.ownerOf(name);
      const ws = (await net!.call(o, 'open', { k }, writer)).s as number;
      return net!.call(o, 'del', { k, s: [ws, seq, seq], iv: 0 }, writer).then((r) => `ok d=${String(r.d)}`, (e: EkvError) => e.code);
    };
    const withValue = await probe('apple', 1);
    const without = await probe('pear', 1);
    // What a caller without read should see: the same answer whether or not the key has a value.
    expect(withValue).toBe(without);
    expect(withValue).toBe('FORBIDDEN');
    // A conditional put reads the key as well; an unconditional put or delete is still the writer's to make.
    const o = net.ownerOf('pear');
    const ws = (await net.call(o, 'open', { k: Buffer.from('pear') }, writer)).s as number;
    await expect(net.call(o, 'put', { k: Buffer.from('pear'), v: Buffer.from('w'), s: [ws, 1, 1], iv: 0 }, writer)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    expect((await net.call(o, 'put', { k: Buffer.from('pear'), v: Buffer.from('w'), s: [ws, 2, 2] }, writer)).n).toBeDefined();
    expect((await net.call(o, 'del', { k: Buffer.from('pear'), s: [ws, 3, 3] }, writer)).d).toBe(true);
    // A reader-writer's conditional write works as before.
    const as2 = (await net.call(owner, 'open', { k: key }, alice)).s as number;
    await expect(net.call(owner, 'del', { k: key, s: [as2, 1, 1], iv: 0 }, alice)).rejects.toMatchObject({ code: 'CONFLICT' });
  }, 30_000);
});

// F5 (low): review-14 F2 made an ACL update's *new* group bindings be fetched only for a signer with the right to
//     make it, but to learn whether the signer holds admin, groupsForAclUpdate first leased every group the
//     current version names (up to 256), for any caller: keys are free, so a stranger's validly signed update (its
//     own key, no right at all) for someone else's namespace cost a lease fetch per group of that namespace's ACL
//     each time their leases had lapsed, under the namespace's update lock. Only a group whose entry grants admin
//     can give the signer that right: now only those are fetched (none when the signer is the owner or holds
//     admin directly).
import { loneAccess } from './helpers/lone-access.ts';
import { generateKeyPairSync } from 'node:crypto';
import { buildAclCreate, buildAclUpdate, buildGroupCreate, encodeSignedDoc } from '../protocol/acl-doc.ts';
import { signerFromPrivateKey } from '../protocol/principal.ts';
import { leaseMs } from '../enclave/access/constants.ts';
import { fakeEnclaveServer } from './helpers/fake-attest.ts';

describe('review-16 F5: a stranger\'s ACL update fetches only the groups that could grant it admin', () => {
  const { svc, clock, stored } = loneAccess();
  const key = () => signerFromPrivateKey(generateKeyPairSync('ed25519').privateKey);
  const alice = key();
  const ops = key();
  const stranger = key();
  const as = (p: Buffer | null) => ({ peer: null, principal: p });
  afterAll(() => svc.stop());

  it('a validly signed update by a key with no right: no lease fetch for the 64 read-only groups the ACL names', async () => {
    clock.t += 10_000;
    const wide = buildAclCreate('wide', alice);
    expect(await svc.handle('aclPut', { ns: 'wide', d: encodeSignedDoc(wide) }, as(alice.principal.bytes))).toEqual({ n: 1 });
    for (let i = 0; i < 64; i++) await svc.handle('grpPut', { g: `r${i}`, d: encodeSignedDoc(buildGroupCreate(`r${i}`, ops, [])) }, as(null));
    const groups = Array.from({ length: 64 }, (_, i) => ({ subject: { group: `r${i}`, key: ops.principal }, rights: ['read' as const] }));
    const v2 = buildAclUpdate(wide, alice, (e) => [...e, ...groups]);
    expect(await svc.handle('aclPut', { ns: 'wide', d: encodeSignedDoc(v2) }, as(null))).toEqual({ n: 2 });
    clock.t += 3 * leaseMs; // every group lease lapsed
    const junk = buildAclUpdate(v2, stranger, (e) => [...e]);
    const before = svc.stats.leaseFetches;
    await expect(svc.handle('aclPut', { ns: 'wide', d: encodeSignedDoc(junk) }, as(null))).rejects.toMatchObject({ code: 'FORBIDDEN' });
    // Before the fix: 64 (every group of the current version, to evaluate the stranger's rights).
    expect(svc.stats.leaseFetches - before).toBe(0);
    // The owner's update still works, and one by an admin through a group is still checked through it.
    const admins = key();
    await svc.handle('grpPut', { g: 'adm', d: encodeSignedDoc(buildGroupCreate('adm', ops, [admins.principal])) }, as(null));
    const v3 = buildAclUpdate(v2, alice, (e) => [...e, { subject: { group: 'adm', key: ops.principal }, rights: ['admin' as const] }]);
    expect(await svc.handle('aclPut', { ns: 'wide', d: encodeSignedDoc(v3) }, as(null))).toEqual({ n: 3 });
    clock.t += 3 * leaseMs;
    const byAdmin = buildAclUpdate(v3, admins, (e) => e.filter((x) => !('group' in x.subject) || x.subject.group !== 'r0'));
    expect(await svc.handle('aclPut', { ns: 'wide', d: encodeSignedDoc(byAdmin) }, as(null))).toEqual({ n: 4 });
  });
});

describe('review-16 F3b: one idle session gives way to one newcomer, not to every hello in flight', () => {
  it('two hellos at once with one idle session: one is admitted, the other refused busy; the table stays at its bound', () => {
    let t = 0;
    const a = new HandshakeAdmission({ awaitingHelloMax: 8, anonymousHandshakesMax: 4, peerHandshakesMax: 1, clientSessionsMax: 1 }, { now: () => t, sessionIdleEvictMs: 1000 });
    const mk = () => {
      const conn = {};
      a.connected(conn, () => a.disconnected(conn));
      return conn;
    };
    const idle = mk();
    a.admit(idle, 'client').release();
    a.established(idle, 'client');
    t += 5000;
    const [n1, n2] = [mk(), mk()];
    const t1 = a.admit(n1, 'client');
    // F3 alone let this one in too (the idle session was only checked, not promised), and both then established:
    // the table grew by one above its bound per such round, eating the room kept for hellos and peers.
    expect(() => a.admit(n2, 'client')).toThrow(/busy/);
    t1.release();
    a.established(n1, 'client');
    expect(a.stats.clientSessions).toBe(1);
  });
});

describe('review-16 F3b: a promised session that made a request meanwhile is not closed', () => {
  it('the idle session becomes active before the newcomer establishes: it stays', () => {
    let t = 0;
    const a = new HandshakeAdmission({ awaitingHelloMax: 8, anonymousHandshakesMax: 4, peerHandshakesMax: 1, clientSessionsMax: 1 }, { now: () => t, sessionIdleEvictMs: 1000 });
    let closed = false;
    const idle = {};
    a.connected(idle, () => {
      closed = true;
      a.disconnected(idle);
    });
    a.admit(idle, 'client').release();
    a.established(idle, 'client');
    t += 5000;
    const n1 = {};
    a.connected(n1, () => a.disconnected(n1));
    a.admit(n1, 'client').release();
    a.active(idle);
    a.established(n1, 'client');
    expect(closed).toBe(false);
    // A hello that went away releases its promise: the next one may have the idle session give way.
    t += 5000;
    const n2 = {};
    a.connected(n2, () => a.disconnected(n2));
    a.admit(n2, 'client').release();
    a.disconnected(n2);
    const n3 = {};
    a.connected(n3, () => a.disconnected(n3));
    expect(() => a.admit(n3, 'client')).not.toThrow();
  });
});
