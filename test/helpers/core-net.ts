/**
 * The in-memory network the data-core unit tests share: cores stepped by hand, every message delivered at once
 * (or dropped by the test), each core's persisted records kept as its log (what a restart loads).
 */
import type { DataNode, LogRecord, Outbound } from '../../enclave/data/index.ts';

export type PeerOutbound = Extract<Outbound, { kind: 'peer' }>;

/** `m` (a peer message) stepped at a core (none: the addressee is down) at time `now`. */
export function deliverPeer(to: DataNode | undefined, m: PeerOutbound, now: number): void {
  to?.step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc }, now);
}

/**
 * Runs the cores until the network is quiet: each round takes every core's ready() (its records appended to its
 * log in `logs`, when given) and hands every message to `deliver`. Throws after 1,000 rounds.
 */
export function drainCores(cores: () => Iterable<readonly [string, DataNode]>, logs: Map<string, LogRecord[]> | null, deliver: (m: Outbound) => void): void {
  for (let round = 0; round < 1000; round++) {
    const out: Outbound[] = [];
    for (const [name, n] of cores()) {
      const rd = n.ready();
      if (logs) logs.set(name, [...(logs.get(name) ?? []), ...rd.persist]);
      out.push(...rd.messages);
    }
    if (out.length === 0) return;
    for (const m of out) deliver(m);
  }
  throw new Error('the network never went quiet');
}
