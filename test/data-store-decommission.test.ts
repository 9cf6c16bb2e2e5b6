// Decommission through the real data store and wire (enclave/cluster/data-store.ts `decommission`): a node of a
// 4-node ring leaves for good (docs/consistency.md, "Retirement", B7); its peers learn it retired, durably, over
// the encoded peer messages, and no range names it afterwards. The core rules are pinned in data-retire.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import { DataNet, fast } from './helpers/data-net.ts';

let net: DataNet | null = null;
afterEach(() => {
  net?.stop();
  net = null;
});

describe('decommission (data store)', () => {
  it('retires the node: its peers learn it retired and every range moves away from it', async () => {
    net = new DataNet();
    await net.start(4, fast);
    await net.formed();
    const [leaving, ...others] = net.nodes;
    const name = leaving?.store.selfMember.name as string;
    const inc = leaving?.store.driver.node?.self.inc as number;
    const r = await leaving?.store.decommission(3_000);
    expect(r?.retired).toBe(true);
    expect(leaving?.store.driver.node?.hasRetired).toBe(true);
    expect(leaving?.store.status()).toMatchObject({ retired: true, serving: false });
    expect(others[0]?.store.status()).toMatchObject({ retired: false });
    await net.until('every peer to know the node retired', 5_000, () => others.every((x) => x.store.driver.node?.retiredMember(name, inc)));
    await net.until('no range to name the node', 15_000, () => others.every((x) => {
      const n = x.store.driver.node;
      for (let s = 0; s < fast.shards!; s++) if (n?.configOf(s)?.members.some((m) => m.name === name)) return false;
      return true;
    }));
  }, 30_000);

  it('is refused, and the node only leaves, while a range naming it has fewer than three members', async () => {
    net = new DataNet();
    await net.start(1, { ...fast });
    await net.until('the single node to serve', 10_000, () => net?.nodes[0]?.store.driver.node?.isActiveOwner(0) ?? false);
    const r = await net.nodes[0]?.store.decommission(200);
    expect(r?.retired).toBe(false);
    expect(r?.rangesStillNamingIt).toBe(fast.shards);
    expect(net.nodes[0]?.store.driver.node?.hasRetired).toBe(false);
  }, 30_000);
});
