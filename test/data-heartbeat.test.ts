// Heartbeats with heartbeatFullEvery (issue 15): a heartbeat carries the sender's epochs (its report) and only
// the configurations the receiver's fresh report lacks, every configuration on every N-th heartbeat and to a peer
// without a fresh report from its current boot (a restarted or new peer, an older image). Instant network and disk.
import { describe, expect, it } from 'vitest';
import { type Config, type DataConfig, DataNode, type LogRecord, type Member, type Outbound, validatePeerBody } from '../enclave/data/index.ts';
import { DataError } from '../enclave/data/errors.ts';
import { deliverPeer, drainCores } from './helpers/core-net.ts';

const base: DataConfig = {
  replicas: 3, shards: 4, leaseTicks: 50, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 10, heartbeatTicks: 5,
  suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 2, sessionsPerPrincipalMax: 2, windowMax: 4,
  queuedMax: 16,
};
const every = 4;

const members: Member[] = ['a', 'b', 'c'].map((name, i) => ({ name, ring: BigInt(i + 1) << 250n, inc: 1 }));
const genesis: Config[] = [0, 1, 2, 3].map((shard) => ({ shard, epoch: 1, members }));

type Hb = { from: string; to: string; at: number; configs: number; epochs: readonly number[] | undefined };

class Net {
  now = 0;
  readonly nodes = new Map<string, DataNode>();
  readonly logs = new Map<string, LogRecord[]>();
  readonly hbs: Hb[] = [];
  /** Messages the host drops. */
  drop: (m: Extract<Outbound, { kind: 'peer' }>) => boolean = () => false;
  private seed = 1;
  private readonly rand = (): number => ((this.seed = (this.seed * 16807) % 2147483647) / 2147483647);

  constructor(configOf: (name: string) => DataConfig = () => ({ ...base, heartbeatFullEvery: every })) {
    for (const m of members) this.start(m.name, [], configOf(m.name));
  }

  /** (Re)starts a node from `log` (a founder's genesis when the log is empty). */
  start(name: string, log: LogRecord[], config: DataConfig = { ...base, heartbeatFullEvery: every }): DataNode {
    const self = members.find((m) => m.name === name) as Member;
    const n = new DataNode({ self, config, rand: this.rand, peers: members, log, ...(log.length === 0 ? { genesis } : {}), now: this.now });
    this.nodes.set(name, n);
    this.logs.set(name, [...log]);
    return n;
  }

  node(name: string): DataNode {
    return this.nodes.get(name) as DataNode;
  }

  drain(): void {
    drainCores(() => this.nodes, this.logs, (m) => {
      if (m.kind !== 'peer' || this.drop(m)) return;
      if (m.body.t === 'hb') this.hbs.push({ from: m.from.name, to: m.to, at: this.now, configs: m.body.configs.length, epochs: m.body.epochs });
      deliverPeer(this.nodes.get(m.to), m, this.now);
    });
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) {
      this.now++;
      for (const n of this.nodes.values()) n.tick(this.now);
      this.drain();
    }
  }

  epochs(name: string): number[] {
    return [0, 1, 2, 3].map((s) => this.node(name).configOf(s)?.epoch ?? 0);
  }
}

describe('heartbeats with heartbeatFullEvery', () => {
  it('on a settled ring: every configuration on one heartbeat in N, none on the others; the epochs on all', () => {
    const net = new Net();
    net.run(200); // past the quiet period and the new epochs of every range
    const settled = net.epochs('a');
    expect(settled.every((e) => e > 1)).toBe(true);
    const from = net.hbs.length;
    net.run(10 * every * base.heartbeatTicks);
    const window = net.hbs.slice(from);
    expect(window.length).toBeGreaterThan(0);
    for (const hb of window) {
      expect(hb.epochs).toEqual(net.epochs(hb.from));
      expect([0, 4]).toContain(hb.configs);
    }
    // Per (sender, receiver): one heartbeat in `every` carries all four configurations.
    for (const a of ['a', 'b', 'c']) for (const b of ['a', 'b', 'c']) {
      if (a === b) continue;
      const pair = window.filter((h) => h.from === a && h.to === b);
      const full = pair.filter((h) => h.configs === 4).length;
      expect(full, `${a} -> ${b}`).toBeGreaterThanOrEqual(Math.floor(pair.length / every) - 1);
      expect(full, `${a} -> ${b}`).toBeLessThanOrEqual(Math.ceil(pair.length / every) + 1);
    }
    // The bytes saved: a quarter or less of the configurations sent before.
    const sent = window.reduce((s, h) => s + h.configs, 0);
    expect(sent).toBeLessThanOrEqual(Math.ceil(window.length / every + 6) * 4);
  });

  it('a restarted node whose log is older than its peers\' reports learns every configuration within a heartbeat of its start', () => {
    // No periodic full heartbeat during the test: only the restart (a new boot) makes the peers send them.
    const rare = { ...base, heartbeatFullEvery: 1000 };
    const net = new Net(() => rare);
    net.run(200);
    const newest = net.epochs('a');
    // c comes back from its genesis-time log only (a rolled-back copy): a new boot, with epoch 1 everywhere.
    const old = (net.logs.get('c') as LogRecord[]).filter((r) => r.t !== 'cfg' || r.config.epoch === 1).slice(0, 6);
    const c = net.start('c', old, rare);
    expect(net.epochs('c').every((e) => e <= 1)).toBe(true);
    net.run(base.heartbeatTicks + 1);
    expect(net.epochs('c')).toEqual(newest);
    expect(c.checkingState).toBe(true); // still in its quiet period: it learnt them in time for its check
  });

  it('a new configuration reaches a peer that missed every other message carrying it on the next heartbeat (not a full one)', () => {
    const rare = { ...base, heartbeatFullEvery: 1000 };
    const net = new Net(() => rare);
    net.run(200);
    const owner = ['a', 'b', 'c'].find((n) => net.node(n).isActiveOwner(0)) as string;
    const other = ['a', 'b', 'c'].find((n) => n !== owner) as string;
    const blind = ['a', 'b', 'c'].find((n) => n !== owner && n !== other) as string;
    // The host keeps from `blind` commits, stale answers and syncs (the messages that teach it a decided configuration), not its votes: it learns the next epoch only from heartbeats.
    net.drop = (m) => m.to === blind && m.body.t !== 'hb' && ['commit', 'stale', 'sync'].includes(m.body.t);
    const before = net.epochs(other)[0] as number;
    net.start(owner, net.logs.get(owner) as LogRecord[], rare); // its range moves to a new epoch
    let t = 0;
    for (; t < 1000 && (net.epochs(other)[0] as number) === before; t++) net.run(1);
    expect(net.epochs(other)[0]).toBeGreaterThan(before);
    const learnt = net.epochs(other)[0];
    let u = 0;
    for (; u < 1000 && net.epochs(blind)[0] !== learnt && (net.epochs(blind)[0] as number) <= (learnt as number); u++) net.run(1);
    expect(u, `${blind} learnt epoch ${learnt} ${u} ticks after ${other}`).toBeLessThanOrEqual(base.heartbeatTicks + 1);
  });

  it('a peer that sends no epochs (an older image) gets every configuration on every heartbeat', () => {
    const net = new Net((name) => (name === 'c' ? base : { ...base, heartbeatFullEvery: every }));
    net.run(200);
    const from = net.hbs.length;
    net.run(4 * every * base.heartbeatTicks);
    const toC = net.hbs.slice(from).filter((h) => h.to === 'c');
    expect(toC.length).toBeGreaterThan(0);
    for (const hb of toC) expect(hb.configs).toBe(4);
    for (const hb of net.hbs.slice(from).filter((h) => h.from === 'c')) {
      expect(hb.epochs).toBeUndefined();
      expect(hb.configs).toBe(4);
    }
    expect(net.hbs.slice(from).some((h) => h.to !== 'c' && h.configs === 0)).toBe(true);
  });

  it('the codec takes epochs as an optional array of non-negative integers', () => {
    const hb = { t: 'hb', leaving: false, configs: [] };
    expect(validatePeerBody(hb, 4)).toEqual(hb);
    expect(validatePeerBody({ ...hb, epochs: [1, 0, 7, 2] }, 4)).toEqual({ ...hb, epochs: [1, 0, 7, 2] });
    for (const epochs of [[-1], [1.5], ['1'], 3, null]) expect(() => validatePeerBody({ ...hb, epochs }, 4)).toThrow(DataError);
  });
});
