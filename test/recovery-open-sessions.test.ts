// A recovery open closes every peer session set up at the old ring id (review-15, "stale peer sessions across a
// recovery open"). The open changes the shared ring credential in place (enclave/recovery/gate.ts) and the ring id
// is checked only at handshakes: before, a peer met at generation g (the node's recovery probes, or a peer that
// connected to it while it was in recovery mode) kept its session and talked to the node of generation g+1. In
// process: two real EnclaveServers and PeerPools with the real peer handshake (stand-in attestation), through a
// stand-in outbound relay, wired as enclave/enclave.ts wires them.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { generateIdentity as generateMember, identityFromKey } from '../client/identity.ts';
import { PeerPool } from '../enclave/cluster/peers.ts';
import { RecoveryGate } from '../enclave/recovery/gate.ts';
import { EnclaveServer } from '../enclave/server.ts';
import { generateIdentity, verifyEd25519 } from '../protocol/keys.ts';
import { recoveryPolicy, signOpen } from '../protocol/recovery.ts';
import type { RingCredential } from '../protocol/ring.ts';
import { fakeAttest, fakeVerify } from './helpers/fake-attest.ts';

const logger = pino({ level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'ekv-rcv-sess-'));
const relayPath = join(dir, 'relay.sock');
const listening = new Map<string, string>(); // address -> the enclave's unix socket
const closers: Array<() => unknown> = [];

// The host's outbound relay: `EKV-CONNECT addr\n`, then bytes both ways.
const relay = net.createServer((s) => {
  s.on('error', () => undefined);
  let head = Buffer.alloc(0);
  const onData = (d: Buffer) => {
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(10);
    if (nl < 0) return;
    s.off('data', onData);
    const path = listening.get(head.subarray(0, nl).toString().replace(/^EKV-CONNECT /, ''));
    if (!path) return void s.destroy();
    const t = net.connect(path);
    t.on('error', () => s.destroy());
    s.on('close', () => t.destroy());
    t.on('close', () => s.destroy());
    t.write(head.subarray(nl + 1));
    s.pipe(t).pipe(s);
  };
  s.on('data', onData);
});
afterAll(async () => {
  for (const c of closers) await c();
  relay.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A node as enclave.ts wires it: one ring credential shared by its server and its peer pool. */
async function node(addr: string, ring: RingCredential) {
  const identity = generateIdentity();
  const peerCalls: string[] = [];
  const server = new EnclaveServer(
    { identity, attest: fakeAttest, verifyPeer: fakeVerify, verifyPrincipal: (p, m, s) => verifyEd25519(p, m, s), ring },
    (op, _req, ctx) => {
      if (ctx.peer) peerCalls.push(op);
      return { ok: 1 };
    },
    logger,
  );
  const path = join(dir, `${addr}.sock`);
  await server.listen(path);
  listening.set(addr, path);
  const peers = new PeerPool({ outboundSocket: relayPath, identity, attest: fakeAttest, verifyPeer: fakeVerify, ring, logger });
  closers.push(() => peers.closeAll(), () => server.close());
  return { server, peers, ring, peerCalls };
}

const outcome = (p: Promise<unknown>) => p.then(() => 'OK', (err: { code?: string }) => err.code ?? 'ERROR');

describe('a recovery open closes the peer sessions of the old ring id', () => {
  it('outbound pooled and inbound peer sessions made at generation g do not carry generation g+1 traffic', async () => {
    await new Promise<void>((r) => relay.listen(relayPath, r));
    const id0 = randomBytes(32);
    const macKey = randomBytes(32);
    const x = await node('x:1', { id: Buffer.from(id0), macKey }); // in recovery mode, then opened
    const y = await node('y:1', { id: Buffer.from(id0), macKey }); // a peer of generation g (an old copy, say)

    // While x is in recovery mode: its probe to y (outbound) and y's session to x (inbound at x).
    expect(await outcome(x.peers.call('y:1', 'ping', {}, 2000))).toBe('OK');
    expect(await outcome(y.peers.call('x:1', 'ping', {}, 2000))).toBe('OK');
    expect(x.peerCalls).toEqual(['ping']);

    const member = identityFromKey(generateMember());
    const gate = new RecoveryGate({
      policy: recoveryPolicy([member.principal.text], 1), ring: x.ring, sealed: null, node: randomBytes(32),
      digest: () => ({ lastSeq: 1, entries: 0, stateHash: randomBytes(32) }), figures: () => ({ lastSeq: 1, entries: 0 }),
      seal: async () => undefined, serving: () => true, logger,
      closePeerSessions: () => {
        x.peers.closeAll();
        x.server.closeStalePeerSessions();
      },
    }, true);
    const st = gate.status();
    const sig = signOpen(member, {
      prevRing: st.ring as Buffer, generation: st.gen as number, node: st.node as Buffer, digest: st.digest as Buffer, nonce: st.nonce as Buffer, next: randomBytes(32),
    });
    expect((await gate.handle('rcvOpen', { s: sig.statement, m: sig.member, sig: sig.sig })).opened).toBe(true);
    expect(x.ring.id.equals(id0)).toBe(false);
    await new Promise((r) => setTimeout(r, 100));

    // Before the fix: both OK, over the sessions of the old id. Now each re-handshakes, and the ids differ.
    expect(await outcome(x.peers.call('y:1', 'ping', {}, 2000))).toBe('WRONG_RING');
    expect(await outcome(y.peers.call('x:1', 'ping', {}, 2000))).toBe('WRONG_RING');
    expect(x.peerCalls).toEqual(['ping']); // y's second ping never reached x's handler

    // A peer at the new id meets x as usual (a fresh handshake under the new credential).
    const z = await node('z:1', { id: Buffer.from(x.ring.id), macKey, previous: x.ring.previous ?? [], generation: 1 });
    expect(await outcome(z.peers.call('x:1', 'ping', {}, 2000))).toBe('OK');
    expect(await outcome(x.peers.call('z:1', 'ping', {}, 2000))).toBe('OK');
  }, 30_000);
});
