// The data core driven by hand for the retirement tests (docs/consistency.md, "Retirement", B7): instant network
// and disk, one range held by the first three members, the others spares; the host may cut any link or take
// any node down, and restart a node from any copy of its log. Used by test/data-retire.test.ts and the hostile
// reviews of retirement (test/review-7.test.ts, test/review-8.test.ts).
import { expect } from 'vitest';
import { type ClientOp, type ClientResult, type Config, type DataConfig, DataNode, type LogRecord, type Member, type Outbound } from '../../enclave/data/index.ts';

export const retireCfg: DataConfig = {
  replicas: 3, shards: 1, leaseTicks: 50, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 10, heartbeatTicks: 5,
  suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 4, sessionsPerPrincipalMax: 4, windowMax: 4,
  queuedMax: 16,
};

/** Members named `names`, spread over the ring in that order (the first three hold the range). */
export function retireMembers(names: readonly string[]): Member[] {
  return names.map((name, i) => ({ name, ring: BigInt(i + 1) << 250n, inc: 1 }));
}

export class RetireNet {
  now = 0;
  readonly nodes = new Map<string, DataNode>();
  /** Names whose messages (both ways) are dropped: down, or cut off by the host. */
  readonly down = new Set<string>();
  readonly logs = new Map<string, LogRecord[]>();
  readonly replies = new Map<number, ClientResult>();
  readonly sent: Outbound[] = [];
  /** The host's link filter: a message from -> to is dropped when true. */
  cut: (from: string, to: string, body: Outbound & { kind: 'peer' }) => boolean = () => false;
  private rid = 0;
  private seed = 7;
  private readonly rand = (): number => ((this.seed = (this.seed * 16807) % 2147483647) / 2147483647);
  private readonly genesis: Config[];

  constructor(readonly all: readonly Member[], readonly config: DataConfig = retireCfg) {
    this.genesis = [{ shard: 0, epoch: 1, members: all.slice(0, 3) }];
    for (const m of all) this.nodes.set(m.name, new DataNode({ self: m, config, rand: this.rand, peers: [...all], log: [], genesis: this.genesis, now: 0 }));
  }

  member(name: string): Member {
    return this.all.find((m) => m.name === name) as Member;
  }

  node(name: string): DataNode {
    return this.nodes.get(name) as DataNode;
  }

  /** A restart from the node's durable log (the host's copy of it). */
  restart(name: string, log: LogRecord[] = [...(this.logs.get(name) ?? [])], config = this.config): DataNode {
    this.down.delete(name);
    this.logs.set(name, [...log]);
    const n = new DataNode({ self: this.member(name), config, rand: this.rand, peers: [...this.all], log, now: this.now });
    this.nodes.set(name, n);
    return n;
  }

  drain(): void {
    for (let round = 0; round < 1000; round++) {
      const out: Outbound[] = [];
      for (const [name, n] of this.nodes) {
        const rd = n.ready();
        if (this.down.has(name)) continue;
        this.logs.set(name, [...(this.logs.get(name) ?? []), ...rd.persist]);
        out.push(...rd.messages);
      }
      if (out.length === 0) return;
      for (const m of out) {
        this.sent.push(m);
        if (m.kind === 'reply') this.replies.set(m.rid, m.result);
        else if (!this.down.has(m.to) && !this.cut(m.from.name, m.to, m)) {
          this.node(m.to).step({ kind: 'peer', from: m.from, body: m.body, pos: m.pos, boot: m.boot, toBoot: m.toBoot, toInc: m.toInc }, this.now);
        }
      }
    }
    throw new Error('the network never went quiet');
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) {
      this.now++;
      for (const [name, n] of this.nodes) if (!this.down.has(name)) n.tick(this.now);
      this.drain();
    }
  }

  /** A client request; with `ticks`, the network runs up to that long for the answer. */
  ask(to: string, op: ClientOp, ticks = 0): ClientResult | undefined {
    const rid = ++this.rid;
    this.node(to).step({ kind: 'client', client: 'cl', rid, op }, this.now);
    this.drain();
    for (let i = 0; i < ticks && !this.replies.has(rid); i++) this.run(1);
    return this.replies.get(rid);
  }

  owner(): string | null {
    return this.all.find((m) => !this.down.has(m.name) && this.node(m.name).isActiveOwner(0))?.name ?? null;
  }

  members(): string[] {
    return (this.node(this.owner() ?? 'a').configOf(0)?.members ?? []).map((m) => `${m.name}/${m.inc}`);
  }
}

/** A net past its first epoch, with an active owner. */
export function startedNet(all: readonly Member[], config: DataConfig = retireCfg): RetireNet {
  const net = new RetireNet(all, config);
  net.run(150);
  expect(net.owner()).not.toBeNull();
  return net;
}

/** A node of the range's configuration other than `not`. */
export function memberOtherThan(net: RetireNet, ...not: string[]): string {
  const c = net.node(net.owner() as string).configOf(0) as Config;
  return (c.members.find((m) => !not.includes(m.name)) as Member).name;
}
