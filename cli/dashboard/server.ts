/**
 * `ekv dashboard`: polls every node of a cluster over its attested session (the SDK verifies each node's
 * document before the first request, and again on every reconnect) and serves one page on 127.0.0.1 that
 * draws the ring live (server-sent events). Only what arrived over those sessions is shown as the node's
 * state; the process ids come from each node's host (/healthz, untrusted) and the page says so.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EkvClient } from '../../client/index.ts';
import type { ClusterFile } from '../../client/cluster.ts';
import { EkvError } from '../../protocol/errors.ts';
import { DashModel, type DashState, type NodeView, type PollResult } from './model.ts';
import { fetchHostPids } from '../healthz.ts';

/** How often each node is asked, and how long an answer may take: a silent node shows down within ~1.5 s. */
export const pollIntervalMs = 500;
export const pollTimeoutMs = 1000;
const sseClientsMax = 32;

export interface DashboardOptions {
  cluster: ClusterFile;
  kv: EkvClient;
  /** One line: the trust policy the nodes are verified against. */
  trust: string;
  port: number;
  intervalMs?: number;
  timeoutMs?: number;
}

export interface RunningDashboard {
  url: string;
  state(): DashState;
  close(): Promise<void>;
}

const page = readFileSync(new URL('./index.html', import.meta.url));
const script = readFileSync(new URL('./app.js', import.meta.url));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (t = setTimeout(() => reject(new EkvError('TIMEOUT', `${what}: no answer within ${ms} ms`)), ms)))]).finally(() => clearTimeout(t));
}

async function pollNode(kv: EkvClient, addr: string, timeoutMs: number): Promise<PollResult> {
  const conn = kv.node(addr);
  try {
    const [status, metrics] = await withTimeout(Promise.all([conn.call('status', {}), conn.call('metrics', {}).catch(() => ({ m: null }))]), timeoutMs, 'status');
    const att = conn.attested;
    if (!att) throw new EkvError('UNATTESTED', 'no verified document');
    return {
      ok: true, at: Date.now(), status, metrics: metrics.m,
      attestation: {
        pcr0: Buffer.from(att.pcrs.get(0) ?? []).toString('hex'), moduleId: att.moduleId.slice(0, 100), timestamp: att.timestamp,
        leafNotAfter: att.leafNotAfter, ringId: conn.ringId?.toString('hex') ?? null,
      },
    };
  } catch (err) {
    // A node that timed out is dropped, so the next poll reconnects (and re-attests) rather than waiting on it.
    if (err instanceof EkvError && err.code === 'TIMEOUT') conn.close();
    const code = err instanceof EkvError ? err.code : 'UNAVAILABLE';
    return { ok: false, at: Date.now(), code, message: (err as Error).message.slice(0, 200) };
  }
}

async function hostSays(httpBase: string | undefined): Promise<NodeView['hostSays']> {
  if (!httpBase) return null;
  const pids = await fetchHostPids(httpBase, 800);
  return pids ? { pids: { ...pids } } : null;
}

export async function startDashboard(o: DashboardOptions): Promise<RunningDashboard> {
  const addrs = o.cluster.nodes.map((n) => n.addr);
  const httpOf = new Map(o.cluster.nodes.map((n) => [n.addr, n.http]));
  const model = new DashModel(addrs, o.trust);
  const interval = o.intervalMs ?? pollIntervalMs;
  const timeout = o.timeoutMs ?? pollTimeoutMs;
  const clients = new Set<http.ServerResponse>();
  let stopped = false;
  let lastSent = '';

  const broadcast = () => {
    const data = JSON.stringify(model.state(Date.now()));
    if (data === lastSent) return;
    lastSent = data;
    for (const c of clients) c.write(`event: state\ndata: ${data}\n\n`);
  };

  // One loop per node, so a silent node never delays the others; a round ends when every node answered once.
  let answered = new Set<string>();
  const loops = addrs.map(async (addr) => {
    while (!stopped) {
      const started = Date.now();
      const [r, h] = await Promise.all([pollNode(o.kv, addr, timeout), hostSays(httpOf.get(addr))]);
      if (stopped) return;
      model.update(addr, r, h);
      answered.add(addr);
      if (answered.size === addrs.length) {
        model.endRound(Date.now());
        answered = new Set();
      }
      broadcast();
      await new Promise((res) => setTimeout(res, Math.max(0, interval - (Date.now() - started))));
    }
  });

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    res.setHeader('cache-control', 'no-store');
    res.setHeader('x-content-type-options', 'nosniff');
    if (req.method !== 'GET') {
      res.writeHead(405, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'BAD_REQUEST', message: 'GET only' }));
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'" }).end(page);
    } else if (path === '/app.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(script);
    } else if (path === '/favicon.ico') {
      res.writeHead(204).end();
    } else if (path === '/state') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(model.state(Date.now())));
    } else if (path === '/events') {
      if (clients.size >= sseClientsMax) {
        res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'UNAVAILABLE', message: 'too many viewers' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', connection: 'keep-alive' });
      res.write(`event: state\ndata: ${JSON.stringify(model.state(Date.now()))}\n\n`);
      clients.add(res);
      req.on('close', () => clients.delete(res));
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'NOT_FOUND', message: 'no such page' }));
    }
  });
  // Heartbeat: keeps proxies and the browser's EventSource from timing out on a quiet ring.
  const heartbeat = setInterval(() => {
    for (const c of clients) c.write(': keep-alive\n\n');
  }, 15_000);
  heartbeat.unref();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/`,
    state: () => model.state(Date.now()),
    async close() {
      stopped = true;
      clearInterval(heartbeat);
      for (const c of clients) c.end();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await Promise.all(loops);
    },
  };
}
