// A rolling kill -9 with relaunches under the same ids (e2e-jepsen row 3, docs/membership.md "Restarts"), on the
// ring core alone in the seeded simulator: two nodes killed, relaunched ~2.5 s later joining through a third,
// then two others the same way. Before join lookups made their hops forget the joiner's old entry, seed 2 left
// the one active node (n1) with a joining node as its last successor, kept because it was "silent" rather than
// gone: n1 forwarded every join lookup into a node that answers none, and the three others stayed joining for
// good (the data layer then waited for ever: two restarted members that never heard of each other, B5).
import { describe, expect, it } from 'vitest';
import { ringConfig } from '../enclave/cluster/ring-driver.ts';
import type { NodeRef } from '../enclave/ring/messages.ts';
import { nodeIdFromPublicKey } from '../enclave/ring/index.ts';
import { Sim } from './sim/sim.ts';

function rolling(seed: number, gapMs: number): string[] {
  const sim = new Sim({ seed, config: ringConfig, net: { unitsPerTick: 10, delayMin: 1, delayMax: 8, dropProbability: 0 } });
  const refs: NodeRef[] = Array.from({ length: 4 }, (_, i) => ({ id: nodeIdFromPublicKey(Buffer.from(`node-${i + 1}-${seed}`.padEnd(32, 'x'))), addr: `n${i + 1}` }));
  const ref = (name: string): NodeRef => refs.find((r) => r.addr === name) as NodeRef;
  sim.bootstrap(refs);
  sim.runTicks(40);
  const ticks = (ms: number): number => Math.round(ms / 50); // the enclave's ring tick
  const kill = (name: string): void => sim.kill(ref(name).id);
  const relaunch = (name: string): void => {
    const n = sim.addNode(ref(name)); // same id: an enclave back with its sealed identity, no ring view
    n.join(ref('n1'));
    sim.flush(n);
  };
  const cycle = (a: string, b: string): void => {
    kill(a);
    sim.runTicks(ticks(700));
    kill(b);
    sim.runTicks(ticks(gapMs));
    relaunch(a);
    sim.runTicks(ticks(1_000));
    relaunch(b);
    sim.runTicks(ticks(1_500));
  };
  cycle('n2', 'n3');
  cycle('n4', 'n2');
  sim.runTicks(ticks(20_000));
  return refs.map((r) => {
    const n = sim.nodes.get(r.id);
    return `${r.addr}:${n?.status ?? 'down'}:${n?.successors.length ?? 0}`;
  });
}

describe('relaunched nodes rejoin under their old ids (rolling kill -9)', () => {
  it('seed 2: every node active with the whole ring as successors 20 s after the last relaunch', () => {
    expect(rolling(2, 2_500)).toEqual(['n1:active:3', 'n2:active:3', 'n3:active:3', 'n4:active:3']);
  });

  it('other seeds and gaps too', () => {
    for (const seed of [1, 3, 4, 5, 6]) for (const gap of [1_500, 2_500, 3_500]) {
      expect(rolling(seed, gap), `seed ${seed} gap ${gap}`).toEqual(['n1:active:3', 'n2:active:3', 'n3:active:3', 'n4:active:3']);
    }
  });
});
