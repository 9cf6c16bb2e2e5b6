/**
 * The host proxy of one node, on the parent instance: the inbound relay
 * (clients and peer hosts -> enclave), the outbound relay (enclave -> peers,
 * KMS), the sealed-blob store, and the HTTP side. Untrusted by design.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { startCredentialRefresher } from './credentials.ts';
import { checkEnclaveHealth, sharedHealth } from './health.ts';
import { createHttpApp } from './http.ts';
import { decommissionEnclave, type DecommissionOutcome } from './enclave-metrics.ts';
import { createMetrics } from './metrics.ts';
import { listen, startInboundRelay, startOutboundRelay, type OutboundPolicy } from './relay.ts';
import { nodeConfigForLaunch, RingHints } from './ring-hints.ts';
import { EnclaveWatchdog, spawnEnclaveCommand, type WatchdogLimits } from './watchdog.ts';

export interface HostOptions {
  vsockDir: string;
  listenHost: string;
  listenPort: number;
  httpPort: number;
  /** Where sealed blobs are stored (opaque to the host). */
  dataDir?: string;
  outboundPolicy: OutboundPolicy;
  logger: Logger;
  info?: () => Record<string, unknown>;
  /** Starts the sealed-blob store on its socket; returns a closer. */
  startBlobStore?: (socketPath: string, dataDir: string) => Promise<{ close(): Promise<void> }>;
  /**
   * The instance metadata service (IMDSv2) whose role credentials the host keeps in the blob store for the
   * enclave's KMS calls (host/credentials.ts); none: the enclave gets no credentials.
   */
  imdsUrl?: string;
  /**
   * The command that launches this node's enclave and lives as long as it does (infra/host/run-enclave.sh on
   * Nitro); given, the host is the enclave's watchdog (host/watchdog.ts). None: someone else launches it.
   */
  enclaveCommand?: string;
  /**
   * The watchdog's first launch waits for this (a joining node's ring-secret fetch: an enclave launched
   * without it refuses to start, and each refusal would cost a relaunch of the watchdog's bounded budget and
   * a growing backoff). Resolving to false (the fetch was abandoned) launches nothing.
   */
  launchAfter?: Promise<boolean>;
  watchdogLimits?: Partial<WatchdogLimits>;
  /** Roots the health check's attestation must chain to (default the AWS Nitro root; a local ring: the emulator's). */
  healthRoots?: string[];
  /** PCR0s the health check expects (the release's current and next); a different image is reported unhealthy. */
  expectPcr0?: () => string[];
  /** Health check timeout (default 5 s). */
  healthTimeoutMs?: number;
  /** The `node` label of the enclave's metrics on /metrics (default: listenHost:port). */
  nodeName?: string;
  /**
   * The /metrics scrape token for the enclave's families from other machines (loopback scrapes need none;
   * review-5 A3). Default: $EKV_METRICS_TOKEN, else the contents of $EKV_METRICS_TOKEN_FILE, else none.
   */
  metricsToken?: string | null;
  /**
   * The enclave's per-node settings (enclave/host-config.ts), written to node-config.json in dataDir before each
   * launch. With no join address (the founding node), a relaunch joins through a member the enclave last named
   * (host/ring-hints.ts).
   */
  nodeConfig?: { selfAddr: string; join: string };
}

export interface RunningHost {
  port: number;
  httpPort: number;
  enclaveSocket: string;
  watchdog: EnclaveWatchdog | null;
  /** Asks the enclave to leave for good (retire; docs/consistency.md, "Retirement"); the caller then closes. */
  decommission(): Promise<DecommissionOutcome>;
  close(): Promise<void>;
}

export function hostSocketPaths(vsockDir: string) {
  return {
    enclave: join(vsockDir, 'enclave-5000.sock'),
    /** The enclave's host channel: the metrics hello, for /metrics only (never relayed; enclave/host-channel.ts). */
    enclaveMetrics: join(vsockDir, 'enclave-5001.sock'),
    outbound: join(vsockDir, 'host-8000.sock'),
    blobs: join(vsockDir, 'host-8001.sock'),
  };
}

export async function startHost(o: HostOptions): Promise<RunningHost> {
  const paths = hostSocketPaths(o.vsockDir);
  const metrics = createMetrics();
  rmSync(paths.outbound, { force: true });
  rmSync(paths.blobs, { force: true });
  const inbound = await startInboundRelay({ host: o.listenHost, port: o.listenPort, enclaveSocket: paths.enclave, counters: metrics.counters, logger: o.logger });
  const outbound = await startOutboundRelay({ socketPath: paths.outbound, policy: o.outboundPolicy, counters: metrics.counters, logger: o.logger });
  const closeInbound = closer(inbound);
  const closeOutbound = closer(outbound);
  const blobs = o.startBlobStore && o.dataDir ? await o.startBlobStore(paths.blobs, o.dataDir) : null;
  const credentials = o.imdsUrl && o.dataDir ? startCredentialRefresher({ imdsUrl: o.imdsUrl, dataDir: o.dataDir, logger: o.logger }) : null;
  // The first set before the enclave needs it; a failure is logged and retried (the enclave then waits or fails, as without KMS).
  await credentials?.refresh().catch(() => undefined);
  const hints = o.dataDir ? new RingHints(o.dataDir) : null;
  const writeNodeConfig = () => {
    if (!o.nodeConfig || !o.dataDir) return;
    const cfg = hints ? nodeConfigForLaunch(o.nodeConfig, hints) : o.nodeConfig;
    writeFileSync(join(o.dataDir, 'node-config.json'), JSON.stringify(cfg) + '\n', { mode: 0o600 });
    if (cfg.join !== o.nodeConfig.join) o.logger.info({ join: cfg.join }, 'no join address configured: the enclave joins through a member it last named');
  };
  if (o.nodeConfig && o.dataDir) {
    mkdirSync(o.dataDir, { recursive: true, mode: 0o700 });
    writeNodeConfig();
  }
  const health = sharedHealth(() => checkEnclaveHealth({
    enclaveSocket: paths.enclave,
    ...(o.healthRoots ? { roots: o.healthRoots } : {}),
    ...(o.expectPcr0 ? { expectPcr0: o.expectPcr0() } : {}),
    ...(o.healthTimeoutMs ? { timeoutMs: o.healthTimeoutMs } : {}),
  }).then((r) => {
    metrics.healthChecks.inc({ result: r.enclave });
    if (r.members && r.enclave === 'serving') hints?.update(r.members);
    watchdog?.observe(r);
    return r;
  }));
  const watchdog = o.enclaveCommand ? new EnclaveWatchdog({
    launch: () => {
      writeNodeConfig();
      return spawnEnclaveCommand(o.enclaveCommand as string);
    },
    probe: () => health.fresh(),
    logger: o.logger.child({ svc: 'watchdog' }),
    registry: metrics.registry,
    ...(o.watchdogLimits ? { limits: o.watchdogLimits } : {}),
  }) : null;
  let closed = false;
  if (watchdog && o.launchAfter) {
    o.logger.info('enclave launch waits for the ring-secret');
    void o.launchAfter.then((go) => {
      if (go && !closed) watchdog.start();
    }, (err: unknown) => o.logger.error({ err: (err as Error).message }, 'no enclave launch: waiting for the ring-secret failed'));
  } else {
    watchdog?.start();
  }
  const nodeName = () => o.nodeName ?? `${o.listenHost}:${(inbound.address() as AddressInfo).port}`;
  const app = createHttpApp({
    enclaveSocket: paths.enclave, enclaveMetricsSocket: paths.enclaveMetrics, metrics, logger: o.logger, health, node: nodeName,
    metricsToken: o.metricsToken !== undefined ? o.metricsToken : metricsTokenFromEnv(process.env),
    info: () => ({ ...(o.info?.() ?? {}), ...(watchdog ? { watchdog: watchdog.describe() } : {}) }),
    ...(o.dataDir ? { ringSecretFile: join(o.dataDir, 'ring-secret') } : {}),
  });
  const http: HttpServer = await listen(createServer(app), { host: o.listenHost, port: o.httpPort });
  const port = (inbound.address() as AddressInfo).port;
  const httpPort = (http.address() as AddressInfo).port;
  o.logger.info({ port, httpPort, vsockDir: o.vsockDir }, 'host proxy listening');
  return {
    port,
    httpPort,
    enclaveSocket: paths.enclave,
    watchdog,
    decommission: () => decommissionEnclave(paths.enclaveMetrics),
    async close() {
      closed = true;
      credentials?.close();
      await watchdog?.stop();
      await Promise.all([closeInbound(), closeOutbound(), closeHttp(http), blobs?.close()]);
    },
  };
}

/** A closer that also ends the relayed connections still open (server.close alone waits for them). */
function closer(s: net.Server): () => Promise<void> {
  const open = new Set<net.Socket>();
  s.on('connection', (c: net.Socket) => {
    open.add(c);
    c.on('close', () => open.delete(c));
  });
  return () =>
    new Promise((r) => {
      s.close(() => r());
      for (const c of open) c.destroy();
    });
}

function closeHttp(s: HttpServer): Promise<void> {
  s.closeAllConnections();
  return new Promise((r) => s.close(() => r()));
}

/** Loopback only: the local emulated ring. */
export const loopbackOnly: OutboundPolicy = (host) => host === '127.0.0.1' || host === '::1' || host === 'localhost';

/** The /metrics scrape token from the host's environment (review-5 A3): the variable, or a file it names. */
export function metricsTokenFromEnv(env: NodeJS.ProcessEnv): string | null {
  const direct = env.EKV_METRICS_TOKEN?.trim();
  if (direct) {
    if (direct.length < 16) throw new Error('EKV_METRICS_TOKEN: the token must be at least 16 characters');
    return direct;
  }
  const file = env.EKV_METRICS_TOKEN_FILE;
  if (!file) return null;
  const t = readFileSync(file, 'utf8').trim();
  if (t.length < 16) throw new Error('EKV_METRICS_TOKEN_FILE: the token must be at least 16 characters');
  return t;
}
