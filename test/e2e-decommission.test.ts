// Decommission with real processes (docs/consistency.md, "Retirement: leaving for good", B7): in a sealed
// 4-node ring (R = 3), node C is asked over its host channel to leave for good and retires at once, while many
// ranges still name it (no wait for them to move). Then node B, a co-member of many of those ranges, is
// killed (-9) and relaunched from its sealed state. Boot fencing (B5) makes B wait for the admission of every
// other member of its ranges, C included, which is gone; B counts C as admitting it once it has known C retired
// for a lease (B7c), so every range comes back and every key written before reads back. (Without B7c those
// ranges stay unavailable for good: the reads below time out.)
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { requestDecommission } from '../protocol/handshake.ts';
import { RingFixture } from './helpers/ring-fixture.ts';

const keys = Array.from({ length: 120 }, (_, i) => Buffer.from(`retire-${i}`));

describe('decommission: a co-member restarts while ranges still name a retired node (4 nodes, R=3, sealed)', () => {
  let fx: RingFixture;

  beforeAll(async () => {
    fx = await RingFixture.start({ nodes: 4, replicas: 3 });
    await fx.waitSettled(40_000);
  }, 90_000);

  afterAll(async () => {
    await fx?.stop();
  });

  it('the retired node is not waited for: every range comes back after the restart, every key reads back', async () => {
    const [a, b, c] = fx.members as [NonNullable<(typeof fx.members)[0]>, NonNullable<(typeof fx.members)[0]>, NonNullable<(typeof fx.members)[0]>];
    const kv = await fx.client(a.addr);
    await Promise.all(keys.map((k, i) => kv.put(k, `v${i}`)));
    // Only the host's own channel offers it: through the client port (what the network reaches) it is refused.
    const [host, port] = c.addr.split(':') as [string, string];
    const socket = net.connect(Number(port), host);
    socket.on('error', () => undefined);
    try {
      await expect(requestDecommission(new FramedSocket(socket, 1 << 20), 5000, 0)).rejects.toMatchObject({ code: 'UNAVAILABLE', reason: 'PROTOCOL' });
    } finally {
      socket.destroy();
    }
    expect((await fx.status(c.addr)).ok).toBe(true);
    // Retire at once (waitMs 0): the ranges it is in have not moved yet.
    const r = await c.decommission(0);
    expect(r).toMatchObject({ retired: true, heard: true });
    expect(r.rangesStillNamingIt).toBeGreaterThan(0);
    await fx.removeNode(c);
    const pid = fx.kill9(b);
    await fx.waitRelaunched(b, pid, 30_000);
    // Every key reads back through a surviving node (the SDK retries UNAVAILABLE within its timeout).
    const deadline = Date.now() + 60_000;
    let got: string[] = [];
    for (;;) {
      try {
        got = await Promise.all(keys.map(async (k) => (await kv.get(k)).toString()));
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await new Promise((res) => setTimeout(res, 500));
      }
    }
    expect(got).toEqual(keys.map((_, i) => `v${i}`));
  }, 120_000);
});
