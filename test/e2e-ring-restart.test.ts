// A sealed enclave that crashes (kill -9) is relaunched by its LocalNode 500 ms
// later; it unseals its identity and its data, so it comes back with the same
// ring id at the same address, and must rejoin and serve its range again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RingFixture, type NodeView } from './helpers/ring-fixture.ts';

const keys = Array.from({ length: 200 }, (_, i) => Buffer.from(`restart-${i}`));

describe('a sealed enclave restarted after kill -9 (3 nodes, R=3)', () => {
  let fx: RingFixture;
  let before: NodeView;
  let after: NodeView;

  beforeAll(async () => {
    fx = await RingFixture.start({ nodes: 3, replicas: 3 });
    await fx.waitSettled(30_000);
    const kv = await fx.client(fx.addrs()[0] as string);
    await Promise.all(keys.map((k, i) => kv.put(k, `v${i}`)));
    const victim = fx.members[1]!;
    before = await fx.status(victim.addr);
    const pid = fx.kill9(victim);
    await fx.waitRelaunched(victim, pid, 20_000);
    after = await fx.status(victim.addr);
  }, 60_000);

  afterAll(async () => {
    await fx?.stop();
  });

  it('comes back with the same identity (unsealed)', () => {
    expect(before.id).not.toBeNull();
    expect(after.id).toBe(before.id);
  });

  // Before c762d40 this failed: the join lookup for its own id found itself and RingNode.finishJoin dropped
  // the answer, so the node stayed 'joining' forever and its range was UNAVAILABLE.
  it('rejoins and serves its range again', async () => {
    await fx.waitSettled(15_000);
    const kv = await fx.client(fx.members[1]!.addr);
    const got = await Promise.all(keys.map(async (k) => (await kv.get(k)).toString()));
    expect(got).toEqual(keys.map((_, i) => `v${i}`));
  }, 40_000);
});
