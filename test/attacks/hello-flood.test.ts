// Attack (issue 10, item 6): work before authentication.
//
// Every hello costs the enclave an NSM attestation and a signature before the caller proves anything.
// An anonymous attacker floods one node of a 2-node ring (R = 2) with client hellos: many connections
// that each send a hello and then either hang up at once (a rate flood) or never finish (holding their
// handshake open until they are pushed out). Before the fix, the flood filled the NSM queue (StreamNsm
// answers BUSY at 64; LibNsm queued without end), so a peer's hello failed or waited behind it. Now
// anonymous hellos have a bounded share (the rest is refused BUSY before any NSM work, and idle
// handshakes are pushed out by newer ones) and peer hellos a reserved one. During the flood: a new
// node joins THROUGH the flooded node, the ring settles with 3 nodes and every key gets its R copies,
// an established client keeps being served, and a new client gets a session (retrying on BUSY).
// The flood's own figures are the control that it saturated the node (hellos refused BUSY).
//
// The NSM is the resource this attack targets. The emulated NSM (in this process) signs in about a
// millisecond, so the test machine's CPU would run out before it does; the test gives it a service
// time of nsmServiceMs per attestation (one at a time, like the device), making it the bottleneck.
// A quarter of the flood's hellos claim mode 'peer' without the ring MAC (the claim is only checked at
// the finish, so before the peer-hello MAC they took the 16 peer-reserved slots): each is refused at
// once (WRONG_RING, before any NSM work). Probes of such hellos, one at a time, are never answered with
// a document; genuine peer hellos (the joining node's, through the flooded node) carry the MAC and are
// admitted. The unit-level control (flood and replays take the peer slots with the check removed) is
// test/protocol-ring.test.ts "peer-reserved handshake slots".
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../../client/index.ts';
import { encodeCbor, decodeCbor } from '../../protocol/cbor.ts';
import { handshakeBytesMax, protocolVersion } from '../../protocol/constants.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { EmulatedNsm } from '../../emulator/nsm.ts';
import { RingFixture, sleep } from '../helpers/ring-fixture.ts';

const replicas = 2;
const keys = Array.from({ length: 40 }, (_, i) => `flood-${i}`);
const workers = Number(process.env.EKV_FLOOD_WORKERS ?? 128);

interface FloodStats {
  hellos: number;
  served: number;
  busy: number;
  otherRefusals: number;
  droppedBeforeAnswer: number;
  /** Hellos claiming 'peer' without the ring MAC, refused before any work. */
  peerClaimsRefused: number;
}

/** One raw hello in `mode`; resolves with the first answer's type ('server', or the refusal's message). */
async function hello(host: string, port: number, mode: 'client' | 'peer', hold = false): Promise<string> {
  const socket = net.connect({ host, port });
  socket.on('error', () => undefined);
  const fs = new FramedSocket(socket, handshakeBytesMax);
  try {
    fs.write(encodeCbor({ t: 'hello', v: protocolVersion, mode, nonce: randomBytes(32), eph: randomBytes(32) }));
    const msg = decodeCbor(await fs.next(15_000)) as { t?: string; message?: string };
    // Holders never send their finish: they keep the handshake open until the node closes it.
    if (msg.t === 'server' && hold) await fs.next(15_000).catch(() => undefined);
    return msg.t === 'server' ? 'server' : String(msg.message ?? msg.t);
  } catch {
    return 'dropped';
  } finally {
    socket.destroy();
  }
}

/** Anonymous hellos from `workers` concurrent connections until stopped; half never finish their handshake. */
function startFlood(addr: string): { stop: () => Promise<FloodStats> } {
  const [host, port] = addr.split(':') as [string, string];
  const stats: FloodStats = { hellos: 0, served: 0, busy: 0, otherRefusals: 0, droppedBeforeAnswer: 0, peerClaimsRefused: 0 };
  let running = true;
  const one = async (hold: boolean, mode: 'client' | 'peer') => {
    stats.hellos++;
    const r = await hello(host, Number(port), mode, hold);
    if (r === 'server') stats.served++;
    else if (/without proof of the ring secret/.test(r)) stats.peerClaimsRefused++;
    else if (r === 'dropped') stats.droppedBeforeAnswer++;
    else if (/busy/.test(r)) stats.busy++;
    else stats.otherRefusals++;
  };
  const loops = Array.from({ length: workers }, async (_, i) => {
    while (running) {
      await one(i % 2 === 0, i % 4 === 1 ? 'peer' : 'client');
      await sleep(Number(process.env.EKV_FLOOD_PAUSE ?? 2)); // keep the shared 2-core test machine usable; the node still sees ~thousands of hellos
    }
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return stats;
    },
  };
}

/** A new client's first request, retried while the node refuses it for load (BUSY, or its handshake dropped). */
async function newClientServed(ring: RingFixture, addr: string): Promise<{ attempts: number }> {
  for (let attempts = 1; ; attempts++) {
    const kv = await connect({ nodes: [addr], trust: ring.trust, timeoutMs: 10_000 });
    try {
      expect((await kv.get('flood-0')).toString()).toBe('v-flood-0');
      return { attempts };
    } catch (err) {
      if (!(err instanceof EkvError) || !['UNAVAILABLE', 'CLOSED'].includes(err.code) || attempts >= 50) throw err;
      await sleep(100);
    } finally {
      await kv.close();
    }
  }
}

let ring: RingFixture;
let established: EkvClient;
const nsmServiceMs = 15;
const realAttest = EmulatedNsm.prototype.attest;

beforeAll(async () => {
  EmulatedNsm.prototype.attest = async function (this: EmulatedNsm, req) {
    await sleep(nsmServiceMs);
    return realAttest.call(this, req);
  };
  ring = await RingFixture.start({ nodes: 2, replicas });
  await ring.waitSettled(30_000);
  established = await ring.client(ring.addrs()[0] as string);
  for (const k of keys) await established.put(k, `v-${k}`);
});

afterAll(async () => {
  await ring?.stop();
  EmulatedNsm.prototype.attest = realAttest;
});

describe('a flood of anonymous hellos', () => {
  it('does not keep peers from joining and replicating, nor clients from being served', async () => {
    const target = ring.members[0]!;
    const flood = startFlood(target.addr);
    let stats: FloodStats;
    try {
      await sleep(1500); // the flood is at full strength before anything else starts
      // Hellos that only claim 'peer', one at a time: none is answered with a document (none took a slot).
      const [host, port] = target.addr.split(':') as [string, string];
      const probes: string[] = [];
      for (let i = 0; i < 10; i++) {
        probes.push(await hello(host, Number(port), 'peer'));
        await sleep(20);
      }
      expect(probes.filter((p) => !/without proof of the ring secret/.test(p)), 'unproven peer hellos not refused').toEqual([]);
      // The new node joins through the flooded node (its first live member).
      const joinedAt = Date.now();
      await ring.addNode();
      await ring.waitSettled(60_000);
      const { report } = await ring.waitCopies(keys.map((k) => Buffer.from(k)), 60_000, false);
      expect(report.atLeast, report.lines.join('\n')).toBe(true);
      const joinMs = Date.now() - joinedAt;
      // The client that was connected before the flood is served throughout.
      for (const k of keys.slice(0, 10)) expect((await established.get(k)).toString()).toBe(`v-${k}`);
      await established.put('during-flood', 'yes');
      // A client arriving now gets a session.
      const fresh = await newClientServed(ring, target.addr);
      stats = await flood.stop();
      console.log(
        `hello flood: ${stats.hellos} hellos from ${workers} connections; ${stats.served} answered with a document, ${stats.busy} refused BUSY, ` +
          `${stats.peerClaimsRefused} unproven peer claims refused, ${stats.otherRefusals} other refusals, ${stats.droppedBeforeAnswer} dropped; join + settle + R copies in ${joinMs} ms; ` +
          `a new client was served after ${fresh.attempts} attempt(s)`,
      );
    } finally {
      await flood.stop();
    }
    // Control: the flood did saturate the node's anonymous share (otherwise this test proves nothing).
    expect(stats.busy).toBeGreaterThan(0);
    expect(stats.peerClaimsRefused).toBeGreaterThan(0);
    expect(stats.otherRefusals).toBe(0);
    expect((await established.get('during-flood')).toString()).toBe('yes');
  }, 180_000);
});
