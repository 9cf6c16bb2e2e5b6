// A 5-node ring (R=3) of emulated enclaves, as `ekv up` runs it: keys written
// through different nodes are readable through every node and sit on exactly
// R nodes; a node from a modified image (another PCR0) that tries to join is
// refused: it never enters any node's successor list or predecessor slot,
// never receives a key, and the ring keeps serving meanwhile.
import { appendFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '../client/index.ts';
import type { LocalNode } from '../cli/local/node.ts';
import { imageFor } from './helpers/local-ring.ts';
import { RingFixture, sleep, type NodeView } from './helpers/ring-fixture.ts';

const replicas = 3;
const keyCount = 300;
const keys = Array.from({ length: keyCount }, (_, i) => Buffer.from(`ring-key-${i}`));
const valueOf = (i: number) => `value-${i}-${'x'.repeat(i % 50)}`;

let fx: RingFixture;

beforeAll(async () => {
  fx = await RingFixture.start({ nodes: 5, replicas });
  await fx.waitSettled(30_000);
}, 60_000);

afterAll(async () => {
  await fx?.stop();
});

describe('a 5-node ring with R=3', () => {
  it('serves every key through every node and keeps exactly R copies of each', async () => {
    const addrs = fx.addrs();
    // Each key written through a different node than its neighbours: most requests are forwarded to the owner.
    await Promise.all(keys.map(async (k, i) => (await fx.client(addrs[i % addrs.length] as string)).put(k, valueOf(i))));

    for (const addr of addrs) {
      const kv = await fx.client(addr);
      const got = await Promise.all(keys.map(async (k) => (await kv.get(k)).toString()));
      expect(got.filter((v, i) => v !== valueOf(i)), `reads through ${addr}`).toEqual([]);
    }

    const { views, report } = await fx.waitCopies(keys, 20_000, true);
    expect(report.lines.length).toBe(5);
    expect(report.exact, report.lines.join('\n')).toBe(true);
    expect(views.reduce((s, v) => s + v.keys, 0)).toBe(replicas * keyCount);
    // Requests taken by a node that does not own the key's range were forwarded to its owner.
    expect(views.reduce((s, v) => s + v.forwards, 0)).toBeGreaterThan(0);
  });

  it('iterative lookups: the client walks the ring hop by hop to each key\'s owner, verifying every hop', async () => {
    // Start from one node only: the client learns the others from the route answers, attests each,
    // and checks its identity hashes to the ring id its predecessor named.
    const first = fx.addrs()[0] as string;
    const kv = await connect({ nodes: [first], trust: fx.trust, timeoutMs: 10_000, routing: 'iterative' });
    try {
      const owners = new Set<string>();
      let steps = 0;
      for (const [i, k] of keys.slice(0, 40).entries()) {
        expect((await kv.get(k)).toString()).toBe(valueOf(i));
        owners.add(kv.lastRoute?.addr as string);
        steps += kv.lastRoute?.steps ?? 0;
      }
      expect(owners.size).toBeGreaterThan(1); // it reached owners other than the node it started from
      expect(steps).toBeGreaterThan(0);
    } finally {
      await kv.close();
    }
  });

  describe('a join attempt from a modified image', () => {
    let stranger: LocalNode;
    let strangerPcr0: string;
    let image: string;

    beforeAll(async () => {
      // The ring's image with one more line (another PCR0), and the same without sealing.
      image = join(fx.dir, 'modified.mjs');
      copyFileSync(fx.ring.imagePath, image);
      appendFileSync(image, '\n// one more line: another PCR0\n');
      const unsealed = join(fx.dir, 'modified-unsealed.mjs');
      copyFileSync(await imageFor({ nodes: fx.members.length, replicas: fx.replicas, seal: false }), unsealed);
      appendFileSync(unsealed, '\n// one more line: another PCR0\n');
      // Without the ring's KMS key (see the next test): the node runs and tries to join through a member.
      stranger = await fx.addNode({ imagePath: unsealed, member: false, seal: false });
      strangerPcr0 = stranger.measurement?.pcr0.toString('hex') ?? '';
    }, 60_000);

    it('cannot even start with the ring\'s sealing key (the KMS key policy pins the image)', async () => {
      await expect(fx.addNode({ imagePath: image, member: false, seal: true })).rejects.toThrow(/exited during start-up/);
    });

    it('runs (another PCR0), answers its own clients, and holds nothing', async () => {
      expect(strangerPcr0).toMatch(/^[0-9a-f]{96}$/);
      expect(strangerPcr0).not.toBe(fx.trust.pcrs?.['0']);
      // A client that trusts the modified image (and not this ring's id: the stranger is of no ring) can ask
      // it for its view: it holds no key.
      const { ringId: _thisRing, ...anyRing } = fx.trust;
      const trust = { ...anyRing, pcrs: { '0': strangerPcr0 } };
      const v = await fx.status(stranger.addr, trust);
      expect(v.ok, v.error).toBe(true);
      expect(v.keys).toBe(0);
      expect(v.serving).toBe(false);
      // The ring's own clients refuse it.
      const refused = await fx.status(stranger.addr);
      expect(refused.ok).toBe(false);
      expect(refused.error).toBe('UNATTESTED');
    });

    it('is never taken into the ring, never gets keys, and the ring keeps serving', async () => {
      const seen: string[] = [];
      const check = (views: NodeView[]) => {
        for (const v of views) {
          expect(v.ok, `${v.addr}: ${v.error}`).toBe(true);
          if (v.predecessor === stranger.addr || v.successors.includes(stranger.addr)) seen.push(`${v.addr} lists it`);
        }
      };
      // Over several stabilization rounds (300 ms each) and join retries (500 ms), with writes going on.
      const addrs = fx.addrs();
      const until = Date.now() + 8000;
      for (let round = 0; Date.now() < until; round++) {
        const i = round % keyCount;
        const kv = await fx.client(addrs[round % addrs.length] as string);
        await kv.put(keys[i] as Buffer, `${valueOf(i)}-r${round}`);
        expect((await kv.get(keys[i] as Buffer)).toString()).toBe(`${valueOf(i)}-r${round}`);
        check(await fx.statusAll());
        const { ringId: _thisRing, ...anyRing } = fx.trust;
        const own = await fx.status(stranger.addr, { ...anyRing, pcrs: { '0': strangerPcr0 } });
        if (own.ok) expect(own.keys).toBe(0);
        await sleep(250);
      }
      expect(seen).toEqual([]);
      // The members still form the same 5-node ring, and every key still has its R copies.
      const { views, report } = await fx.waitCopies(keys, 10_000, true);
      expect(views.map((v) => v.addr).sort()).toEqual([...addrs].sort());
      expect(report.exact, report.lines.join('\n')).toBe(true);
    });
  });
});
