// Review 14: the secure channel, admission and authorization (hostile client / host).
//
// F1: the enclave's answers to a client session go into the socket's write buffer without a bound. A client
//     (anonymous, or any principal with read rights) that sends requests and never reads the answers makes the
//     enclave buffer every answer in its own memory (the host relay pipes with back-pressure, so the bytes
//     stay in the enclave). A 20-byte `get` of a 512 KiB value is a 26,000x amplification.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EkvError } from '../protocol/errors.ts';
import { EnclaveServer } from '../enclave/server.ts';
import { HandshakeAdmission } from '../enclave/admission.ts';
import { RpcClient } from '../protocol/rpc.ts';
import { buildAclCreate, buildAclUpdate, buildGroupCreate, encodeSignedDoc } from '../protocol/acl-doc.ts';
import { signerFromPrivateKey } from '../protocol/principal.ts';
import { loneAccess } from './helpers/lone-access.ts';
import { DataNet, fast } from './helpers/data-net.ts';
import { type DataConfig, DataNode, type LogRecord, type Member } from '../enclave/data/index.ts';
import { fakeEnclaveServer } from './helpers/fake-attest.ts';


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('review-14 F1: a client that never reads its answers cannot grow the enclave\'s memory without bound', () => {
  const answerBytes = 256 * 1024;
  let server: EnclaveServer;
  let open: Awaited<ReturnType<typeof fakeEnclaveServer>>['open'];
  let stop: () => Promise<void>;

  beforeAll(async () => {
    // The handler stands in for a `get` of a large value the caller may read (or any answer: status, errors).
    ({ server, open, stop } = await fakeEnclaveServer('ekv-rev14-', () => ({ v: Buffer.alloc(answerBytes, 7) })));
  });

  afterAll(() => stop());

  it('400 gets of 256 KiB (100 MiB of answers) never read: the enclave buffers at most a bounded amount for the connection', async () => {
    const { socket, session } = await open();
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
    // The enclave takes no more of its requests than it can hold the answers of (review-16 F1: it is held, no
    // longer closed, so a client that does read is never closed for asking much at once); its idle session gives
    // way to a newcomer once the table is full (F4).
    expect(peak).toBeLessThanOrEqual(32 * 1024 * 1024 + 2 * 1024 * 1024);
  });

  it('control: a client that reads its answers gets 50 MiB of them, asked for at once, on one session', async () => {
    const { session } = await open();
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

// F2: an ACL update names up to 256 groups (aclGroupEntriesMax); the owner leased every one of them (a lease fetch
//     each: a peer round trip to the group's owner and a pinned entry in the 200,000-document table, on both nodes)
//     BEFORE it checked the update's signature or its signer's authority, and it does so under the namespace's
//     update lock. So any caller, anonymous included, sending junk updates for someone else's namespace: 256 lease
//     fetches per request (the document table fills at ~260 requests/s, after which every node answers
//     UNAVAILABLE "access document table full" for any namespace it has not leased), and the namespace's lock is
//     held for those fetches (a host that stalls them for their 2 s timeout delays the admin's revoke by 2 s per
//     junk update queued before it).
describe('review-14 F2: the groups an ACL update names are leased only once its signer is known to hold the right to make it', () => {
  const { svc, clock, stored } = loneAccess();
  const key = () => signerFromPrivateKey(generateKeyPairSync('ed25519').privateKey);
  const alice = key();
  const mallory = key();
  const ops = key();
  const as = (p: Buffer | null) => ({ peer: null, principal: p });
  let team: ReturnType<typeof buildAclCreate>;

  beforeAll(async () => {
    clock.t += 10_000; // past the owner's takeover wait
    team = buildAclCreate('team', alice);
    expect(await svc.handle('aclPut', { ns: 'team', d: encodeSignedDoc(team) }, as(alice.principal.bytes))).toEqual({ n: 1 });
    expect(await svc.handle('grpPut', { g: 'ops', d: encodeSignedDoc(buildGroupCreate('ops', ops, [mallory.principal])) }, as(null))).toEqual({ n: 1 });
  });
  afterAll(() => svc.stop());

  it('a junk update naming 256 groups, signed by a key without admin and sent anonymously, fetches no lease', async () => {
    const groups = Array.from({ length: 256 }, (_, i) => ({ subject: { group: `g${i}`, key: mallory.principal }, rights: ['read' as const] }));
    const junk = buildAclUpdate(team, mallory, (entries) => [...entries, ...groups]);
    const before = svc.stats.leaseFetches;
    await expect(svc.handle('aclPut', { ns: 'team', d: encodeSignedDoc(junk) }, as(null))).rejects.toMatchObject({ code: 'FORBIDDEN' });
    // Before the fix: 256 (one per group named, each before the signer's authority was checked).
    expect(svc.stats.leaseFetches - before).toBe(0);
  });

  it('the owner\'s own namespace: an update naming 256 groups that do not exist costs one lease fetch, not 256', async () => {
    const own = buildAclCreate('mine', mallory);
    expect(await svc.handle('aclPut', { ns: 'mine', d: encodeSignedDoc(own) }, as(null))).toEqual({ n: 1 });
    const groups = Array.from({ length: 256 }, (_, i) => ({ subject: { group: `h${i}`, key: mallory.principal }, rights: ['read' as const] }));
    const before = svc.stats.leaseFetches;
    await expect(svc.handle('aclPut', { ns: 'mine', d: encodeSignedDoc(buildAclUpdate(own, mallory, (e) => [...e, ...groups])) }, as(null)))
      .rejects.toMatchObject({ code: 'NOT_FOUND', reason: 'UNKNOWN_GROUP' });
    expect(svc.stats.leaseFetches - before).toBeLessThanOrEqual(1);
  });

  it('control: the admin\'s grant to an existing group is checked against it and stored; a second creation is still EXISTS', async () => {
    const v2 = buildAclUpdate(team, alice, (e) => [...e, { subject: { group: 'ops', key: ops.principal }, rights: ['read'] }]);
    expect(await svc.handle('aclPut', { ns: 'team', d: encodeSignedDoc(v2) }, as(null))).toEqual({ n: 2 });
    await svc.check('get', Buffer.from('team/plan'), mallory.principal.bytes); // mallory is in ops: read
    const wrongKey = buildAclUpdate(v2, alice, (e) => [...e, { subject: { group: 'ops2', key: ops.principal }, rights: ['read'] }]);
    await expect(svc.handle('aclPut', { ns: 'team', d: encodeSignedDoc(wrongKey) }, as(null))).rejects.toMatchObject({ code: 'NOT_FOUND', reason: 'UNKNOWN_GROUP' });
    await expect(svc.handle('aclPut', { ns: 'team', d: encodeSignedDoc(buildAclCreate('team', mallory)) }, as(null))).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringMatching(/^EXISTS/) });
  });
});

// F3: `status` is answered to every attested caller, anonymous included (its public view is filtered after it is
//     computed), and computing it counted the keys of every range the node holds by walking each range's map:
//     O(keys on the node) of CPU for a 15-byte request, 256 of them per frame, on the event loop every session
//     and peer shares. (`rcvStatus`, also open to anyone, reads the same count.) Now the count is kept with the
//     range's data, like its bytes.
describe('review-14 F3: counting a range\'s keys (status, for anyone) does not walk the range', () => {
  const n = 50_000;
  const data = new Map<string, { value: string | null; version: number; epoch: number }>();
  for (let i = 0; i < n; i++) data.set(`k${i}`, { value: i % 10 === 0 ? null : 'v', version: 1, epoch: 1 });
  const self: Member = { name: 'a', ring: 1n << 250n, inc: 1 };
  const cfg: DataConfig = {
    replicas: 1, shards: 1, leaseTicks: 50, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 10, heartbeatTicks: 5,
    suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 2, sessionsPerPrincipalMax: 2, windowMax: 4, queuedMax: 16,
  };
  const log: LogRecord[] = [
    { t: 'cfg', shard: 0, config: { shard: 0, epoch: 1, members: [self] } },
    { t: 'snap', shard: 0, instance: 1, ballot: null, synced: true, data, sessions: { next: 1, clock: 0, table: new Map() } },
    // Writes after the snapshot: a new key (+1), a value deleted (-1), a tombstone written again (+1), a value overwritten (0).
    ...([['new', 'v'], ['k1', null], ['k0', 'v'], ['k2', 'w']] as const).map(([key, value]): LogRecord => ({ t: 'w', shard: 0, epoch: 1, op: { key, entry: { value, version: 2, epoch: 1 }, req: null, open: null } })),
  ];

  it('rangeKeys visits no entry, and still counts values (not tombstones), after writes too', () => {
    const node = new DataNode({ self, config: cfg, rand: Math.random, peers: [self], log, now: 0 });
    const values = Map.prototype.values;
    const entries = Map.prototype.entries;
    const iterator = Map.prototype[Symbol.iterator];
    let visited = 0;
    const counting = <T>(it: IterableIterator<T>, size: number): IterableIterator<T> => {
      if (size < n) return it;
      return (function* () {
        for (const x of it) {
          visited++;
          yield x;
        }
      })();
    };
    let keys: number;
    try {
      Map.prototype.values = function (this: Map<unknown, unknown>) { return counting(values.call(this), this.size); };
      Map.prototype.entries = function (this: Map<unknown, unknown>) { return counting(entries.call(this), this.size); } as typeof entries;
      Map.prototype[Symbol.iterator] = Map.prototype.entries;
      keys = node.rangeKeys(0);
    } finally {
      Map.prototype.values = values;
      Map.prototype.entries = entries;
      Map.prototype[Symbol.iterator] = iterator;
    }
    expect(keys).toBe(n - n / 10 + 1);
    // Before the fix: 50,000 (every entry, on every status request).
    expect(visited).toBe(0);
  });
});

describe('review-14 findings not fixed (FINDING: each test asserts the safe behaviour and fails today)', () => {
  // F4 (medium, availability; fixed). Client sessions are bounded (clientSessionsMax = 6,912) and an established
  // session was never closed for being idle: only its 1-hour lifetime ended it. So a stranger who completed that
  // many anonymous handshakes once (through 27 remote addresses, at the host relay's 256 connections per address)
  // and then sent nothing kept every new client out (UNAVAILABLE, busy) for up to an hour, at no further cost.
  // Now a new client hello, when the table is full, closes the session idle longest if it has been idle for
  // sessionIdleEvictMs: holding the table costs a request per session that often (a flood like any other).
  const f4Server = async (idleMs: number) => {
    const admission = new HandshakeAdmission({ awaitingHelloMax: 8, anonymousHandshakesMax: 4, peerHandshakesMax: 2, clientSessionsMax: 2 }, { sessionIdleEvictMs: idleMs });
    const f = await fakeEnclaveServer('ekv-rev14-', () => ({}), { admission });
    const open = async () => {
      const { socket, session } = await f.open();
      return { rpc: new RpcClient(session), socket };
    };
    return { open, stop: f.stop, admission };
  };

  it('F4: sessions that sit idle do not keep a new client out once the session table is full', async () => {
    const { open, stop, admission } = await f4Server(1000);
    try {
      const idle = [await open(), await open()]; // the attacker's, never used again
      await sleep(1500);
      const late = await open(); // before the fix: UNAVAILABLE (busy: 2 client sessions), for as long as the idle ones stay
      expect(await late.rpc.call('status', {}, 2000)).toMatchObject({ ok: true });
      expect(admission.stats.evicted.idleSession).toBe(1);
      expect(admission.stats.clientSessions).toBe(2);
      // The one that gave way is the session idle longest, closed; the other still works.
      await sleep(100);
      expect(idle[0]!.rpc.closed).toBe(true);
      expect(await idle[1]!.rpc.call('status', {}, 2000)).toMatchObject({ ok: true });
      for (const c of [...idle, late]) c.rpc.close();
    } finally {
      await stop();
    }
  }, 20_000);

  it('F4: sessions in use keep their place: a newcomer is refused busy, not let in by closing them', async () => {
    const { open, stop, admission } = await f4Server(1000);
    try {
      const busy = [await open(), await open()];
      const tick = setInterval(() => { for (const c of busy) void c.rpc.call('status', {}, 2000).catch(() => undefined); }, 200);
      try {
        await sleep(1500);
        await expect(open()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
        expect(admission.stats.evicted.idleSession).toBe(0);
        for (const c of busy) expect(await c.rpc.call('status', {}, 2000)).toMatchObject({ ok: true });
      } finally {
        clearInterval(tick);
      }
      for (const c of busy) c.rpc.close();
    } finally {
      await stop();
    }
  }, 20_000);
});

// F5 (low): rights are independent (docs/access-control.md: `write` without `read` is a real grant, e.g. a
//     producer that must not read what others wrote), but a write's refusal carries the key's current version
//     (CONFLICT `n`, and `t` for a key without a value). A write-only principal learns, for any key name it
//     guesses, whether it has a value and how many times it was written, with no side effect: a delete whose
//     ifVersion cannot match. Now a refusal carries the version only to a caller that may also read the key.
describe('review-14 F5: a compare-and-set refusal tells the version only to a caller that may read the key', () => {
  let net: DataNet;
  afterAll(() => net?.stop());

  it('a write-only principal\'s delete with a wrong ifVersion gets no version of the key', async () => {
    const writer = randomBytes(32);
    const writeOnly = new Set([writer.toString('hex')]);
    net = new DataNet();
    await net.start(3, fast, {
      check: (op, _key, principal) => {
        if (op === 'get' && principal && writeOnly.has(principal.toString('hex'))) throw new EkvError('FORBIDDEN', 'access denied');
      },
    });
    await net.formed();
    const key = Buffer.from('apple');
    const owner = net.ownerOf('apple');
    const alice = randomBytes(32);
    const as = (await net.call(owner, 'open', { k: key }, alice)).s as number;
    for (let i = 1; i <= 3; i++) await net.call(owner, 'put', { k: key, v: Buffer.from(`v${i}`), s: [as, i, i] }, alice);
    await expect(net.call(owner, 'get', { k: key }, writer)).rejects.toMatchObject({ code: 'FORBIDDEN' });
    const ws = (await net.call(owner, 'open', { k: key }, writer)).s as number;
    const err = await net.call(owner, 'del', { k: key, s: [ws, 1, 1], iv: 1_000_000 }, writer).then(() => null, (e: unknown) => e as EkvError);
    // Since review-16 F4 a conditional write needs read: FORBIDDEN, whatever the key's state (before: CONFLICT).
    expect(err).toMatchObject({ code: 'FORBIDDEN' });
    // Before the fix: version 3 (the key has a value, written three times).
    expect(err?.version).toBeUndefined();
    expect(err?.absentAt).toBeUndefined();
    // The key is untouched, and a caller who may read it still gets the version with its CONFLICT.
    const mine = await net.call(owner, 'del', { k: key, s: [as, 4, 4], iv: 1_000_000 }, alice).then(() => null, (e: unknown) => e as EkvError);
    expect(mine).toMatchObject({ code: 'CONFLICT', version: 3 });
  }, 30_000);
});
