// review-5: hostile review of the rejoin (enclave/cluster/rejoin.ts, ring-driver start/rejoin, enclave.ts
// joinWithRetry), A1 (cluster/status-view.ts) and R10 (data/node.ts per-principal queue bound). Each test asserts
// the SAFE behaviour; a skipped one is an open finding (see /work/wt/brief/REPORT-review5.md).
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { deliverPeer, drainCores } from './helpers/core-net.ts';
import { pino } from 'pino';
import { createHttpApp } from '../host/http.ts';
import { createMetrics } from '../host/metrics.ts';
import { HostChannel } from '../enclave/host-channel.ts';
import { enclaveMetrics } from '../enclave/metrics.ts';
import { registerNodeMetrics } from '../enclave/node-metrics.ts';
import { rejoinWhenAlone } from '../enclave/cluster/rejoin.ts';
import { RingDriver } from '../enclave/cluster/ring-driver.ts';
import type { PeerPool } from '../enclave/cluster/peers.ts';
import { publicStatus } from '../enclave/cluster/status-view.ts';
import {
  type ClientOp, type ClientResult, type Config, type DataConfig, DataNode, type Member, type Outbound,
} from '../enclave/data/index.ts';
import { queuedPerPrincipalMax } from '../enclave/data/node.ts';
import { fakeRing, idBytes, type Ref, until } from './helpers/fake-ring.ts';

const logger = pino({ level: 'silent' });
const stops: Array<() => void> = [];
afterEach(() => {
  for (const s of stops.splice(0)) s();
});
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}


describe('J1: the host times a status answer or a join address\'s handshake so that a node already in the ring joins again', () => {
  it('rejoin: a node brought in while its status call to a neighbour was pending does not throw its ring view away', async () => {
    const { ring, joins, driver } = fakeRing({ id: 1n, addr: 'a:1' });
    const answer = deferred<Record<string, unknown>>();
    let called = 0;
    const peers = {
      identify: async () => 3n,
      call: async () => {
        called++;
        return answer.promise;
      },
    };
    stops.push(rejoinWhenAlone({ ring: driver, peers, candidates: () => ['c:1'], logger, everyMs: 5, aloneMs: 5 }).stop);
    await until(() => called > 0);
    expect(called).toBe(1);
    // Meanwhile another node joined this one (Chord's notify): it is in a ring now.
    ring.core.successors = [{ id: 9n, addr: 'i:1' }];
    ring.core.predecessor = { id: 9n, addr: 'i:1' };
    // The host lets the (genuine, attested) status answer through only now.
    answer.resolve({ ring: 'active', successors: [{ id: idBytes(8n), addr: 'h:1' }] });
    await new Promise((r) => setTimeout(r, 40));
    expect(joins).toEqual([]);
    expect(ring.core.successors).toEqual([{ id: 9n, addr: 'i:1' }]);
  });

  it('start(join): a node a rejoin brought in while the join address\'s handshake was held does not leave its ring for it', async () => {
    const self = { id: 1n << 200n, addr: 'a:1' };
    const b = { id: 2n << 200n, addr: 'b:1' };
    const held = deferred<bigint>();
    const peers = {
      onWrongIdentity: null,
      identify: (addr: string) => (addr === 'j:1' ? held.promise : Promise.resolve(b.id)),
      call: async () => ({}),
    } as unknown as PeerPool;
    const driver = new RingDriver(self, peers, logger);
    stops.push(() => driver.stop());
    const started = driver.start('j:1');
    // A rejoin through a sealed neighbour brought it into b's ring meanwhile.
    driver.core.seedState({ predecessor: b, successors: [b], fingers: new Array(256).fill(null) });
    held.resolve(3n << 200n); // the join address's handshake completes now (a node of the same ring, or of another)
    await started;
    expect(driver.core.status).toBe('active');
    expect(driver.core.successors.map((s) => s.id)).toEqual([b.id]);
  });
});

describe('J2: rings the host split (or start-up order paired off) merge', () => {
  // FINDING J2 (medium, liveness), fixed: rejoin acted only on a node alone on the ring (or stuck joining); two
  // groups that each formed a ring (the host partitioned a whole-ring restart, or nodes came up in an order that
  // paired them off) stayed apart for good. Now a node in a ring checks a sealed neighbour at a time: looked up in
  // its own ring, the neighbour's id names another node twice in a row, and the neighbour is active in a ring of
  // its own: it rejoins through it, and stabilize interleaves the two rings (test/ring-merge.test.ts shows that
  // part on the pure cores).
  it('a node in a ring whose attested sealed neighbour is active on a ring naming neither it nor its successors acts to merge', async () => {
    const { ring, joins, driver } = fakeRing({ id: 10n, addr: 'a:1' });
    ring.core.successors = [{ id: 20n, addr: 'b:1' }];
    ring.core.predecessor = { id: 20n, addr: 'b:1' };
    // Our ring {10, 20} answers a lookup of 30 with 10 (the next node round): c is not in it.
    (ring as unknown as { lookup: (k: bigint) => Promise<{ owner: Ref }> }).lookup = async () => ({ owner: ring.self });
    const peers = {
      identify: async (addr: string) => (addr === 'b:1' ? 20n : 30n),
      // c (id 30) is on a ring with d (id 40): neither names a nor b.
      call: async () => ({ ring: 'active', successors: [{ id: idBytes(40n), addr: 'd:1' }] }),
    };
    stops.push(rejoinWhenAlone({ ring: driver, peers, candidates: () => ['b:1', 'c:1'], logger, everyMs: 5, aloneMs: 5, mergeEveryMs: 10 }).stop);
    await until(() => joins.length > 0, 2000);
    expect(joins).toEqual([{ id: 30n, addr: 'c:1' }]);
  });

  it('a neighbour found in the same ring, or a lone one, is left alone', async () => {
    const { ring, joins, driver } = fakeRing({ id: 10n, addr: 'a:1' });
    ring.core.successors = [{ id: 20n, addr: 'b:1' }];
    ring.core.predecessor = { id: 20n, addr: 'b:1' };
    let lookups = 0;
    (ring as unknown as { lookup: (k: bigint) => Promise<{ owner: Ref }> }).lookup = async (k: bigint) => {
      lookups++;
      return { owner: k === 30n ? { id: 30n, addr: 'c:1' } : ring.self }; // 30 is in our ring; 50 is not
    };
    const peers = {
      identify: async (addr: string) => (addr === 'c:1' ? 30n : 50n),
      call: async () => ({ ring: 'active', successors: [] }), // 50 is alone: it finds its own way in
    };
    stops.push(rejoinWhenAlone({ ring: driver, peers, candidates: () => ['c:1', 'e:1'], logger, everyMs: 5, aloneMs: 5, mergeEveryMs: 10 }).stop);
    await until(() => lookups >= 8, 2000);
    expect(lookups).toBeGreaterThanOrEqual(8);
    expect(joins).toEqual([]);
  });
});


// ---- the data core by hand (as test/data-node.test.ts): one range, three members, instant network ----

const members: Member[] = ['a', 'b', 'c'].map((name, i) => ({ name, ring: BigInt(i + 1) << 250n, inc: 1 }));
const genesis: Config[] = [{ shard: 0, epoch: 1, members }];
function dataCfg(over: Partial<DataConfig> = {}): DataConfig {
  return {
    replicas: 3, shards: 1, leaseTicks: 50, driftPpm: 10_000, leaseMarginTicks: 1, renewTicks: 10, heartbeatTicks: 5,
    suspectTicks: 20, retryTicks: 10, proposeTimeoutTicks: 100, backoffTicksMax: 10, sessionsMax: 64, sessionsPerPrincipalMax: 2, windowMax: 8,
    queuedMax: 16, ...over,
  };
}

class Net {
  now = 0;
  readonly nodes = new Map<string, DataNode>();
  readonly replies = new Map<number, ClientResult>();
  private rid = 0;
  constructor(cfg: DataConfig) {
    let seed = 1;
    const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (const m of members) this.nodes.set(m.name, new DataNode({ self: m, config: cfg, rand, peers: members, log: [], genesis, now: 0 }));
  }
  node(name: string): DataNode {
    return this.nodes.get(name) as DataNode;
  }
  drain(): void {
    drainCores(() => this.nodes, null, (m) => {
      if (m.kind === 'reply') this.replies.set(m.rid, m.result);
      else deliverPeer(this.nodes.get(m.to), m, this.now);
    });
  }
  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) {
      this.now++;
      for (const n of this.nodes.values()) n.tick(this.now);
      this.drain();
    }
  }
  send(to: string, op: ClientOp): number {
    const rid = ++this.rid;
    this.node(to).step({ kind: 'client', client: 'cl', rid, op }, this.now);
    return rid;
  }
  ask(to: string, op: ClientOp): ClientResult | undefined {
    const rid = this.send(to, op);
    this.drain();
    return this.replies.get(rid);
  }
  owner(): string {
    const o = members.find((m) => this.node(m.name).isActiveOwner(0));
    if (!o) throw new Error('no active owner');
    return o.name;
  }
  open(principal: string): number {
    const r = this.ask(this.owner(), { kind: 'open', shard: 0, principal });
    if (!r || !r.ok || r.kind !== 'open') throw new Error(`open failed: ${JSON.stringify(r)}`);
    return r.session;
  }
}
function startedNet(cfg: DataConfig): Net {
  const net = new Net(cfg);
  net.run(120);
  return net;
}
const put = (key: string, value: string, principal: string, session: number, seq: number): ClientOp =>
  ({ kind: 'put', key, value, ifVersion: null, session, seq, floor: 1, principal });

describe('A2: status `waiting` (public) carries the range\'s write load', () => {
  it('a caller without the operator right sees why a node waits, not how many writes are in flight or queued', () => {
    const net = startedNet(dataCfg());
    const owner = net.owner();
    const s = net.open('k-writer');
    // Two writes of another principal arrive: one goes in flight, one waits (not drained yet).
    net.send(owner, put('x', 'v1', 'k-writer', s, 1));
    net.send(owner, put('x', 'v2', 'k-writer', s, 2));
    const line = net.node(owner).describeRange(0);
    // The raw line (DataStore.status's `waiting`, for a range that is not settled) shows that load...
    expect(line).toMatch(/inflight=1 queued=1/);
    // ...and the public view must not.
    const pub = publicStatus({ serving: false, waiting: [line], keys: 5, bytes: 10 });
    expect(pub.keys).toBeUndefined();
    const w = pub.waiting as string[];
    expect(w).toHaveLength(1);
    expect(w[0]).not.toMatch(/inflight=|queued=/);
    expect(w[0]).toMatch(/active=true/); // still says why
  });
});

describe('R1: the per-principal share does not keep a new principal out', () => {
  // FINDING R1 (medium, availability by a client), fixed: the share is per principal tag, and in an `open` ring a
  // key costs nothing: queuedPrincipalShare (8) fresh keys, each at its share (queuedMax/8), filled the whole range
  // queue, and every other caller's write was refused UNAVAILABLE. Now one more share is kept for principals with
  // nothing waiting (enclave/data/node.ts). Still open: key-less callers share `anon`, so one of them alone takes
  // all the others' share (BUSY for them), and many fresh principals can take the reserve too.
  it('eight principals at their share do not leave a ninth without a place in the queue', () => {
    const cfg = dataCfg();
    const net = startedNet(cfg);
    const owner = net.owner();
    const share = queuedPerPrincipalMax(cfg);
    const sessions = Array.from({ length: 8 }, (_, p) => net.open(`k-sybil${p}`));
    const victim = net.open('k-victim');
    const sybilRids: number[] = [];
    for (let p = 0; p < 8; p++) {
      for (let seq = 1; seq <= share + 2; seq++) sybilRids.push(net.send(owner, put('x', `s${p}-${seq}`, `k-sybil${p}`, sessions[p] as number, seq)));
    }
    const rid = net.send(owner, put('x', 'victim', 'k-victim', victim, 1));
    net.drain();
    // Each sybil was held to its share (BUSY beyond it)...
    expect(sybilRids.filter((r) => net.replies.get(r)?.ok === false && (net.replies.get(r) as { code: string }).code === 'BUSY').length).toBe(8 * 2 - 1);
    // ...and the victim, with nothing waiting, still gets in.
    expect(net.replies.get(rid)).toMatchObject({ ok: true, kind: 'write' });
  });
});

describe('A3: the host publishes the enclave\'s data-derived figures on a port clients can reach', () => {
  // FINDING A3 (medium, confidentiality of counts, closed rings), fixed: the host proxy served the enclave's
  // snapshot (keys, bytes, per-op counters: what A1 keeps from callers without the operator right) unauthenticated
  // on GET /metrics of its HTTP listener, which the infra opens to the client CIDRs by default. Now the enclave's
  // families go only to a loopback scrape or one with the operator's scrape token (EKV_METRICS_TOKEN[_FILE]);
  // the host's own families (connections, bytes relayed, ekv_enclave_up) stay open to any scrape.
  it('a scrape from another machine without the token gets no enclave family; with it, or from loopback, it does', async () => {
    const { enclaveMetricsAllowed } = await import('../host/http.ts');
    const token = 'scrape-token-0123456789';
    // From the client networks (an IPv4 or IPv6 peer, or a v4-mapped one): refused without the token, or with another.
    for (const remote of ['10.0.3.7', '::ffff:172.31.4.2', 'fd00::5']) {
      expect(enclaveMetricsAllowed(remote, undefined, token), remote).toBe(false);
      expect(enclaveMetricsAllowed(remote, 'Bearer wrong-token-0123456789', token), remote).toBe(false);
      expect(enclaveMetricsAllowed(remote, `Basic ${token}`, token), remote).toBe(false);
      expect(enclaveMetricsAllowed(remote, undefined, null), remote).toBe(false); // no token configured: loopback only
      expect(enclaveMetricsAllowed(remote, `Bearer ${token}`, token), remote).toBe(true);
    }
    expect(enclaveMetricsAllowed('127.0.0.1', undefined, null)).toBe(true);
    expect(enclaveMetricsAllowed('::ffff:127.0.0.1', undefined, null)).toBe(true);
    expect(enclaveMetricsAllowed('::1', undefined, null)).toBe(true);
    expect(enclaveMetricsAllowed(undefined, undefined, null)).toBe(false);
  });

  it('the served page carries the enclave\'s key count only for an allowed scrape', async () => {
    const dir = mkdtempSync('/tmp/ekv-r5-');
    registerNodeMetrics({ status: () => ({ keys: 4242, serving: true }), bytes: () => 0, startedAt: Date.now(), data: () => null });
    const channel = new HostChannel(() => enclaveMetrics.snapshot(), logger);
    await channel.listen(join(dir, 'enclave-5001.sock'));
    const health = { fresh: async () => ({ ok: false, enclave: 'down' as const, checkedAt: '', latencyMs: 0 }) };
    const http = await import('node:http');
    const serve = async (app: ReturnType<typeof createHttpApp>, remote: string | null) => {
      // A remote scrape, as the app sees it: the socket's remote address is the scraper's (here set on the socket).
      const server = http.createServer((req, res) => {
        if (remote) Object.defineProperty(req.socket, 'remoteAddress', { value: remote, configurable: true });
        app(req, res);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      return server;
    };
    const token = 'scrape-token-0123456789';
    const app = createHttpApp({ enclaveSocket: join(dir, 'none.sock'), enclaveMetricsSocket: join(dir, 'enclave-5001.sock'), metrics: createMetrics(), logger, info: () => ({}), health, metricsToken: token });
    const remote = await serve(app, '10.0.3.7');
    const local = await serve(app, null);
    try {
      const get = async (server: import('node:http').Server, headers: Record<string, string> = {}) =>
        (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`, { headers })).text();
      const leaks = (text: string) => /ekv_enclave_keys\{[^}]*\} 4242/.test(text);
      const anon = await get(remote);
      expect(leaks(anon)).toBe(false);
      expect(anon).toMatch(/ekv_host_enclave_up\{[^}]*\} 1/); // the host's own families stay
      expect(leaks(await get(remote, { authorization: `Bearer ${token}` }))).toBe(true);
      expect(leaks(await get(local))).toBe(true);
    } finally {
      for (const s of [remote, local]) await new Promise((r) => s.close(() => r(undefined)));
      await channel.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

