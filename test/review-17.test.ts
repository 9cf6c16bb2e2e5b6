// Review 17: the client SDK and CLI as the last line of defence, attacked as a hostile host (it controls every byte
// between client and enclave, and which enclave a TCP connection reaches) and as hostile genuine nodes (the same
// public image in another deployment, a wiped node that founded a new ring, a node serving old state).
//
// F1 (high): a client whose policy pins no ring id (the SDK's documented `connect({ nodes, trust: { pcrs } })`, a CLI
//     `--pcr` without `--ring` on an operator's cluster file that names none) took answers from ANY ring of the
//     image, and its floor is per ring id, so a genuine node of another ring (the host wipes a node and lets it found
//     a new, empty ring; or runs the image in another deployment) answered NOT_FOUND (version 0) for a key this very
//     client had written, and that was returned as data; a write was acknowledged by the empty ring. Fix: a client
//     without a pinned ring id learns the ring of the first node it verifies and holds every other node to it
//     exactly as a pin would (WRONG_RING; RING_RECOVERED for a reopened ring naming it), and with a floor file the
//     learnt ring is kept there, so a later process (the CLI: one per command) holds to it too.
// F2 (medium): scan answers were checked against the per-key floor but never against the ring generation
//     (OLDER_GENERATION), unlike get/put/delete: an old copy of generation g answering a scan, to a client that has
//     seen generation g+1, had its old keys and values returned as current. Fix: callRange checks the generation of
//     the answering node (its signed lineage, and the answer's `g`) as the single-key path does. The same gap in a
//     write's CONFLICT saying "no value" (version 0 with absentAt): now checked against the generation too.
// F3 (medium): ACL and group documents bypassed the floor: getAcl/getGroup (`ekv acl show`), and the read half of
//     every grant/revoke/addMember/removeMember, believed any signed version a node sent. A rolled-back node answered
//     an older ACL (a right since revoked shown as held) and the client built and signed its edit on top of it, so a
//     revoke "succeeded" on the stale copy only. Fix: every ACL/group document read or written goes through the floor
//     (its reserved key, its body's version, the hash of its signed bytes): older versions, and another document at a
//     seen version, are STALE.
// F4 (medium): `allowDebug` with PCR0 pinned to all zeros (what a debug-mode enclave reports, whatever its image;
//     the CLI's --allow-debug --pcr 0=00..) passed checkTrustPolicy as "pinned", yet accepts every debug-mode
//     enclave of every image (the attacker's own). Fix: refused (BAD_REQUEST) unless allowAnyImage says so openly.
// F5 (medium): a scan with values entered every key it returned into the floor as the most recently used, so one
//     scan over more keys than the floor's bound (8,192) pushed out every key this client had written or read one by
//     one, and a rolled-back answer for them was then accepted. Fix: a scan's keys are checked as before but enter the
//     floor as the least recently used (and a kept key keeps its place): a scan never evicts keys used one by one.
// F6 (low): a cluster file with `trust: null` (typeof 'object') passed parseCluster and then crashed the CLI with a
//     TypeError in the trust store (every command given -c); and the file was read whole before its size was
//     checked. Fix: trust must be a plain object (BAD_REQUEST otherwise); the read stops one byte past the bound.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EkvClient, EkvError } from '../client/index.ts';
import { Floor } from '../client/floor.ts';
import { generateIdentity as generateClientKey, identityFromKey, toPrincipalSigner } from '../client/identity.ts';
import { buildAclCreate, buildAclUpdate, encodeSignedDoc, grantEdit, revokeEdit, type SignedDoc } from '../protocol/acl-doc.ts';
import { checkTrustPolicy } from '../client/trust.ts';
import { EnclaveServer } from '../enclave/server.ts';
import { EmulatorCa } from '../emulator/ca.ts';
import { measureImage, pcrMap } from '../emulator/measure.ts';
import { EmulatedNsm } from '../emulator/nsm.ts';
import { generateIdentity, verifyEd25519 } from '../protocol/keys.ts';
import { ringCredential, type RingCredential } from '../protocol/ring.ts';
import type { RpcResult } from '../protocol/rpc.ts';

const dir = mkdtempSync(join(tmpdir(), 'ekv-rev17-'));
const pcrs = pcrMap(measureImage(Buffer.from('review-17 image\n')));
const pcr0 = Buffer.from(pcrs.get(0) as Uint8Array).toString('hex');
let ca: EmulatorCa;
let nsm: EmulatedNsm;
const servers: EnclaveServer[] = [];
const relays: net.Server[] = [];

beforeAll(async () => {
  ca = await EmulatorCa.createEphemeral();
  nsm = new EmulatedNsm({ ca, pcrs, moduleId: ca.newModuleId() });
});

afterAll(async () => {
  for (const r of relays) r.close();
  for (const s of servers) await s.close().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A genuine node of the image (real handshake, emulated NSM document) in ring `ring`, with a one-range in-memory
 * store: get/put/del/open as the data path answers them. Its unix socket path is returned.
 */
let nodeCount = 0;
async function genuineNode(ring: RingCredential | null): Promise<{ path: string; store: Map<string, { v: Buffer; n: number }> }> {
  const store = new Map<string, { v: Buffer; n: number }>();
  const path = join(dir, `node-${nodeCount++}.sock`);
  const handler = (op: string, req: Record<string, unknown>): RpcResult => {
    const k = Buffer.from(req.k as Uint8Array).toString('hex');
    if (op === 'open') return { s: 1, S: 1, sh: 0, w: 64 };
    if (op === 'get') {
      const e = store.get(k);
      if (!e) throw new EkvError('NOT_FOUND', 'no such key', { version: 0 });
      return { v: e.v, n: e.n };
    }
    if (op === 'put') {
      const n = (store.get(k)?.n ?? 0) + 1;
      store.set(k, { v: Buffer.from(req.v as Uint8Array), n });
      return { n };
    }
    throw new EkvError('BAD_REQUEST', op);
  };
  const server = new EnclaveServer(
    {
      identity: generateIdentity(), attest: (nonce, publicKey) => nsm.attest({ nonce, publicKey }),
      verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers')), verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s), ring,
    },
    handler, pino({ level: 'silent' }),
  );
  await server.listen(path);
  servers.push(server);
  return { path, store };
}

/** The hostile host: a TCP address whose connections it sends to whichever enclave socket it likes (`to`). */
async function hostRelay(to: string): Promise<{ addr: string; redirect: (path: string) => void }> {
  let target = to;
  const open = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const e = net.connect(target);
    open.add(c);
    c.on('close', () => open.delete(c));
    c.on('error', () => e.destroy());
    e.on('error', () => c.destroy());
    c.pipe(e).pipe(c);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  relays.push(server);
  const port = (server.address() as net.AddressInfo).port;
  return {
    addr: `127.0.0.1:${port}`,
    redirect: (path) => {
      target = path;
      for (const c of open) c.destroy(); // the client handshakes again, with whatever enclave the host picked
    },
  };
}

const ringX = ringCredential(Buffer.alloc(32, 1));
const ringW = ringCredential(Buffer.alloc(32, 2));
const trust = () => ({ roots: [ca.rootPem], pcrs: { '0': pcr0 } });

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return err instanceof EkvError ? err.code : `untyped ${String(err)}`;
  }
}

describe('review-17 F1: a client that pins no ring id holds to the ring it met first', () => {
  it('a genuine node of another ring (a wiped node that founded anew) cannot answer NOT_FOUND for a key this client wrote', async () => {
    const real = await genuineNode(ringX);
    const wiped = await genuineNode(ringW);
    const host = await hostRelay(real.path);
    const kv = new EkvClient([host.addr], trust(), { timeoutMs: 3000 });
    try {
      expect(await kv.put('k', 'v1')).toBe(1);
      expect(await kv.put('k', 'v2')).toBe(2);
      host.redirect(wiped.path);
      // Before the fix: NOT_FOUND ("no such key", version 0 of ring W: nothing in the floor for W) came back as data.
      expect(await code(kv.get('k'))).toBe('WRONG_RING');
      expect(await code(kv.put('k', 'v3'))).toBe('WRONG_RING');
      expect(wiped.store.size).toBe(0); // the empty ring acknowledged nothing
      // Control: the host sends it back to the real ring: served.
      host.redirect(real.path);
      expect((await kv.get('k')).toString()).toBe('v2');
    } finally {
      await kv.close();
    }
  }, 30_000);

  it('across processes: with a floor file, the next client (the CLI: one process per command) holds to the same ring', async () => {
    const real = await genuineNode(ringX);
    const wiped = await genuineNode(ringW);
    const host = await hostRelay(real.path);
    const file = join(dir, 'f1.floor');
    const first = new EkvClient([host.addr], trust(), { timeoutMs: 3000, floor: new Floor({ file }) });
    await first.put('k', 'v1');
    await first.close();
    host.redirect(wiped.path);
    const second = new EkvClient([host.addr], trust(), { timeoutMs: 3000, floor: new Floor({ file }) });
    try {
      expect(await code(second.get('k'))).toBe('WRONG_RING');
    } finally {
      await second.close();
    }
    // Control: a client that pins ring W itself (its caller's choice) is served by it.
    const pinned = new EkvClient([host.addr], { ...trust(), ringId: ringW.id.toString('hex') }, { timeoutMs: 3000, floor: new Floor({ file: join(dir, 'f1b.floor') }) });
    try {
      expect(await code(pinned.get('k'))).toBe('NOT_FOUND');
    } finally {
      await pinned.close();
    }
  }, 30_000);
});

type Routed = (key: unknown, op: string, args: Record<string, unknown>, via: { conn?: unknown }) => Promise<Record<string, unknown>>;

/** Replaces the client's routed calls with `fn` (as test/client-floor.test.ts does); `open` is answered here. */
function script(kv: EkvClient, fn: Routed): void {
  (kv as unknown as { callRouted: Routed }).callRouted = async (key, op, args, via) => {
    if (op === 'open') return { s: 1, sh: 0, S: 1, w: 64 };
    return fn(key, op, args, via ?? {});
  };
}

const ringA = 'a'.repeat(64);
const ringB = 'b'.repeat(64);
const reopened = { ringId: Buffer.from(ringB, 'hex'), lineage: { generation: 1, previous: [Buffer.from(ringA, 'hex')] } };
const oldCopy = { ringId: Buffer.from(ringA, 'hex'), lineage: { generation: 0, previous: [] } };

describe('review-17 F2: scan answers are held to the ring generation, as gets are', () => {
  it('an old copy of generation 0 answering a scan, after the client saw generation 1: STALE, not its old keys', async () => {
    const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: pcr0 } }, { timeoutMs: 1000 });
    let conn: unknown = reopened;
    script(kv, async (_key, op, _args, via) => {
      via.conn = conn;
      const old = conn === oldCopy;
      if (op === 'get') return old ? { v: Buffer.from('old'), n: 1 } : { v: Buffer.from('new'), n: 5, g: 1 };
      if (op === 'scan') return { S: 1, e: [[Buffer.from('k'), Buffer.from(old ? 'old' : 'new'), old ? 1 : 5]], m: false, ...(old ? {} : { g: 1 }) };
      throw new Error(op);
    });
    expect((await kv.get('k')).toString()).toBe('new');
    conn = oldCopy; // the host starts an old copy of generation 0 beside the reopened ring and routes the scan to it
    await expect(kv.get('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_GENERATION' }); // as before
    // Before the fix: the old copy's page (k at version 1, value 'old') was returned as current.
    await expect(kv.scan({ values: true })).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_GENERATION' });
    // Control: the reopened ring's own scan is served.
    conn = reopened;
    expect((await kv.scan({ values: true })).items.map((i) => i.key.toString())).toEqual(['k']);
  });

  it('a CONFLICT saying "no value" (version 0, absentAt) from the old copy is STALE too, not a CONFLICT', async () => {
    const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: pcr0 } }, { timeoutMs: 1000 });
    let conn: unknown = reopened;
    script(kv, async (_key, op, _args, via) => {
      via.conn = conn;
      if (op === 'get') return { v: Buffer.from('new'), n: 5, g: 1 };
      throw new EkvError('CONFLICT', 'the key has no value', { version: 0, absentAt: 0 });
    });
    await kv.get('other'); // generation 1 seen
    conn = oldCopy;
    // Before the fix: CONFLICT (version 0: "the key has no value") from generation 0 was returned.
    await expect(kv.put('k', 'x', { ifVersion: 5 })).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_GENERATION' });
    conn = reopened;
    await expect(kv.put('k', 'x', { ifVersion: 5 })).rejects.toMatchObject({ code: 'CONFLICT' }); // control
  });
});

describe('review-17 F3: ACL documents are held to the floor, as values are', () => {
  const owner = identityFromKey(generateClientKey());
  const alice = identityFromKey(generateClientKey()).principal;
  const v1 = buildAclCreate('team', owner, []);
  const v2 = buildAclUpdate(v1, owner, grantEdit(alice, 'read'));
  const v3 = buildAclUpdate(v2, owner, revokeEdit(alice, null));
  const aclKey = Buffer.from('\x00acl/team', 'latin1');

  /** A client of ring A whose node answers aclGet with `serving()`, and records what aclPut was sent. */
  function aclClient(serving: () => { doc: SignedDoc; n: number }, floor?: Floor | null): { kv: EkvClient; puts: number[] } {
    const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: pcr0 } }, { timeoutMs: 1000, identity: toPrincipalSigner(owner), ...(floor === undefined ? {} : { floor }) });
    const puts: number[] = [];
    script(kv, async (key, op, _args, via) => {
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      expect(key).toEqual(aclKey);
      if (op === 'aclGet') return { d: encodeSignedDoc(serving().doc), n: serving().n };
      if (op === 'aclPut') {
        puts.push(serving().n + 1);
        return { n: serving().n + 1 };
      }
      throw new Error(op);
    });
    return { kv, puts };
  }

  it('after reading version 3 (alice revoked), a rolled-back node\'s version 2 (alice holds read) is STALE, and no edit is signed on it', async () => {
    let state = { doc: v3, n: 3 };
    const { kv, puts } = aclClient(() => state);
    expect((await kv.acl.getAcl('team')).body.version).toBe(3);
    state = { doc: v2, n: 2 }; // the host routes to a node restarted from an older sealed copy
    // Before the fix: version 2 came back as the current ACL (alice shown holding read) ...
    await expect(kv.acl.getAcl('team')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
    // ... and a grant was built on it, signed and acknowledged by the stale copy only.
    await expect(kv.acl.grant('team', identityFromKey(generateClientKey()).principal, 'read')).rejects.toMatchObject({ code: 'STALE' });
    expect(puts).toEqual([]);
    // "No such namespace" from a node restarted from a copy older than the namespace: STALE, not NOT_FOUND.
    script(kv, async (_key, _op, _args, via) => {
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      throw new EkvError('NOT_FOUND', 'no such namespace');
    });
    await expect(kv.acl.getAcl('team')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
    script(kv, async (_key, op, _args, via) => {
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      if (op === 'aclGet') return { d: encodeSignedDoc(state.doc), n: state.n };
      throw new Error(op);
    });
    // Another document at a version seen (a fork): STALE too.
    state = { doc: buildAclUpdate(v2, owner, grantEdit(alice, 'write')), n: 3 };
    await expect(kv.acl.getAcl('team')).rejects.toMatchObject({ code: 'STALE', reason: 'FORKED_VALUE' });
  });

  it('controls: the same answers to a client that never saw version 3 are accepted; newer versions always are', async () => {
    let state = { doc: v2, n: 2 };
    const { kv, puts } = aclClient(() => state);
    expect((await kv.acl.getAcl('team')).body.version).toBe(2);
    state = { doc: v3, n: 3 };
    expect((await kv.acl.getAcl('team')).body.version).toBe(3);
    const edited = await kv.acl.grant('team', alice, 'read');
    expect(edited.body.version).toBe(4);
    expect(puts).toEqual([4]);
  });
});

describe('review-17 F4: allowDebug with PCR0 pinned to zeros is not a pin', () => {
  const zeros = '00'.repeat(48);

  it('checkTrustPolicy refuses it (every debug-mode enclave of every image reports PCR0 of zeros)', () => {
    expect(() => checkTrustPolicy({ pcrs: { 0: zeros }, allowDebug: true })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    expect(() => checkTrustPolicy({ pcrs: { 0: [pcr0, zeros] }, allowDebug: true })).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    // Controls: said openly it is allowed; a real pin with allowDebug is a pin (a debug enclave's zeros never match it);
    // zeros without allowDebug never match anything (the verifier refuses debug documents first).
    expect(() => checkTrustPolicy({ pcrs: { 0: zeros }, allowDebug: true, allowAnyImage: true })).not.toThrow();
    expect(() => checkTrustPolicy({ pcrs: { 0: pcr0 }, allowDebug: true })).not.toThrow();
    expect(() => checkTrustPolicy({ pcrs: { 0: zeros } })).not.toThrow();
  });

  it('an attacker\'s debug-mode enclave (another image: all PCRs zero) is not reachable through such a policy', async () => {
    const debugNsm = new EmulatedNsm({ ca, pcrs: new Map(Array.from({ length: 16 }, (_, i) => [i, new Uint8Array(48)])), moduleId: ca.newModuleId() });
    const path = join(dir, 'debug.sock');
    const server = new EnclaveServer(
      {
        identity: generateIdentity(), attest: (nonce, publicKey) => debugNsm.attest({ nonce, publicKey }),
        verifyPeer: () => Promise.reject(new EkvError('UNATTESTED', 'no peers')), verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s), ring: null,
      },
      () => ({ v: Buffer.from('attacker'), n: 1 }), pino({ level: 'silent' }),
    );
    await server.listen(path);
    servers.push(server);
    const host = await hostRelay(path);
    // Before the fix: the client was made and the attacker's answer returned as data.
    let got: string;
    try {
      const kv = new EkvClient([host.addr], { roots: [ca.rootPem], pcrs: { '0': zeros }, allowDebug: true }, { timeoutMs: 3000 });
      got = await code(kv.get('k'));
      await kv.close();
    } catch (err) {
      got = err instanceof EkvError ? err.code : String(err);
    }
    expect(got).toBe('BAD_REQUEST');
  }, 30_000);
});

describe('review-17 F5: a scan with values does not push the keys this client wrote out of its floor', () => {
  it('put k at v3, scan 100 other keys with values (floor of 50 keys), then a rolled-back v1 of k: STALE', async () => {
    const kv = new EkvClient(['127.0.0.1:1'], { pcrs: { 0: pcr0 } }, { timeoutMs: 1000, floor: new Floor({ keysMax: 50 }) });
    let rolledBack = false;
    script(kv, async (_key, op, _args, via) => {
      via.conn = { ringId: Buffer.from(ringA, 'hex') };
      if (op === 'put') return { n: 3 };
      if (op === 'get') return rolledBack ? { v: Buffer.from('v1'), n: 1 } : { v: Buffer.from('v3'), n: 3 };
      if (op === 'scan') {
        const e = Array.from({ length: 100 }, (_, i) => [Buffer.from(`other-${String(i).padStart(3, '0')}`), Buffer.from('x'), 1]);
        return { S: 1, e, m: false };
      }
      throw new Error(op);
    });
    expect(await kv.put('k', 'v3')).toBe(3);
    expect((await kv.scan({ values: true, limit: 100 })).items).toHaveLength(100);
    rolledBack = true;
    // Before the fix: the scan's 100 keys evicted k (least recently used first), and v1 came back as data.
    await expect(kv.getWithVersion('k')).rejects.toMatchObject({ code: 'STALE', reason: 'OLDER_VERSION' });
    // Control: scanned keys are still checked while there is room (the floor holds up to its bound).
    expect(kv.floor?.size).toBe(50);
  });
});

describe('review-17 F6: a hostile cluster file gets a typed refusal, never a crash', () => {
  it('trust: null (or not an object) is BAD_REQUEST at parse, not a TypeError in the trust store or resolveTrust', async () => {
    const { parseCluster } = await import('../client/cluster.ts');
    const { trustChoice } = await import('../cli/trust-flags.ts');
    const { resolveConnect } = await import('../client/index.ts');
    for (const trustJson of ['null', '[]', '"x"']) {
      const text = `{"version":1,"nodes":[{"addr":"127.0.0.1:1"}],"trust":${trustJson}}`;
      // Before the fix: parsed, then `ekv get -c` died on a TypeError (cannot read properties of null).
      const outcome = (f: () => unknown): string => {
        try {
          f();
          return 'ok';
        } catch (err) {
          return err instanceof EkvError ? err.code : `untyped ${(err as Error).name}`;
        }
      };
      expect(outcome(() => trustChoice({}, parseCluster(text), { EKV_TRUST_DIR: dir }))).toBe('BAD_REQUEST');
      expect(outcome(() => resolveConnect({ cluster: parseCluster(text), trustClusterFile: true }))).toBe('BAD_REQUEST');
    }
  });
});
