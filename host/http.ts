/**
 * The host's HTTP side (express): the enclave's attestation document for a
 * caller's nonce, health, and metrics. Nothing here is trusted by clients:
 * the document is checked by the client's own verifier.
 */
import express from 'express';
import net from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { requestAttestation } from '../protocol/handshake.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import type { HealthReport } from './health.ts';
import { enclaveMetricsText } from './enclave-metrics.ts';
import type { HostMetrics } from './metrics.ts';
import { readRingSecretFile } from './ring-secret.ts';

export const attestationNonceBytesMax = 512;
const enclaveTimeoutMs = 5000;

export function fetchAttestation(enclaveSocket: string, nonce: Uint8Array): Promise<Buffer> {
  const socket = net.connect(enclaveSocket);
  const fs = new FramedSocket(socket, handshakeBytesMax);
  return requestAttestation(fs, nonce, enclaveTimeoutMs).finally(() => socket.destroy());
}

/** Whether a /metrics scrape gets the enclave's families: from loopback, or with the scrape token (review-5 A3). */
export function enclaveMetricsAllowed(remote: string | undefined, authorization: string | undefined, token: string | null): boolean {
  if (remote !== undefined && (remote === '::1' || /^(::ffff:)?127\./.test(remote))) return true;
  if (!token || !authorization) return false;
  const m = /^Bearer (.{1,512})$/.exec(authorization);
  if (!m) return false;
  const digest = (x: string) => createHash('sha256').update(x).digest();
  return timingSafeEqual(digest(m[1] as string), digest(token));
}

export function createHttpApp(opts: {
  enclaveSocket: string; metrics: HostMetrics; logger: Logger; info: () => Record<string, unknown>;
  /**
   * The enclave's host channel (enclave-5001.sock), where the metrics hello is answered; the client socket
   * (enclave-5000.sock, which the client port relays to) refuses it (docs/observability.md). Default: none.
   */
  enclaveMetricsSocket?: string;
  /** The enclave's health: an attested handshake and its ring status (host/health.ts). */
  health: { fresh(): Promise<HealthReport> };
  /** The node's ring-secret blob (KMS ciphertext, not secret), served for hosts of joining nodes. */
  ringSecretFile?: string;
  /** The `node` label of the enclave's metrics (default: the node's public address). */
  node?: () => string;
  /**
   * The scrape token (review-5 A3): the enclave's families (keys, bytes, per-op counters: what A1 keeps from
   * clients without the operator right) are served only to a loopback scrape or one that sends
   * `Authorization: Bearer <token>`. The HTTP port is often open to the clients' networks. Default: none (loopback only).
   */
  metricsToken?: string | null;
}) {
  const node = opts.node ?? (() => 'unknown');
  const app = express();
  app.disable('x-powered-by');

  app.get('/v1/attestation', async (req, res) => {
    const raw = typeof req.query.nonce === 'string' ? req.query.nonce : '';
    if (raw.length > attestationNonceBytesMax * 2 || !/^([0-9a-fA-F]{2})*$/.test(raw)) {
      opts.metrics.attestations.inc({ result: 'bad_request' });
      res.status(400).json({ code: 'BAD_REQUEST', message: `nonce must be hex, at most ${attestationNonceBytesMax} bytes` });
      return;
    }
    try {
      const doc = await fetchAttestation(opts.enclaveSocket, Buffer.from(raw, 'hex'));
      opts.metrics.attestations.inc({ result: 'ok' });
      res.type('application/cbor').send(doc);
    } catch (err) {
      opts.metrics.attestations.inc({ result: 'error' });
      opts.logger.warn({ err: (err as Error).message }, 'attestation fetch failed');
      res.status(503).json({ code: 'UNAVAILABLE', message: 'the enclave did not answer' });
    }
  });

  app.get('/v1/ring-secret', async (_req, res) => {
    const bytes = opts.ringSecretFile ? await readRingSecretFile(opts.ringSecretFile) : null;
    if (bytes === null) {
      res.status(404).json({ code: 'NOT_FOUND', message: 'this node has no ring-secret' });
      return;
    }
    res.type('application/octet-stream').send(bytes);
  });

  // 200 only when the enclave answered an attested handshake for a fresh nonce and says it serves;
  // 503 with the reason otherwise (down, not serving, an image the release does not name).
  app.get('/healthz', async (_req, res) => {
    const report = await opts.health.fresh();
    res.status(report.ok ? 200 : 503).json({ ...report, ...opts.info() });
  });

  app.get('/metrics', async (req, res) => {
    const name = node();
    const enclave = opts.enclaveMetricsSocket ? await enclaveMetricsText(opts.enclaveMetricsSocket, name) : { up: false, text: '', error: 'no host channel' };
    opts.metrics.enclaveUp.set({ node: name }, enclave.up ? 1 : 0);
    if (!enclave.up) opts.logger.debug({ err: enclave.error }, 'enclave metrics fetch failed');
    const allowed = enclaveMetricsAllowed(req.socket.remoteAddress, req.get('authorization'), opts.metricsToken ?? null);
    const tail = allowed ? enclave.text : '# the enclave\'s families are served to loopback scrapes or with the scrape token (docs/observability.md)\n';
    res.type(opts.metrics.registry.contentType).send((await opts.metrics.registry.metrics()) + tail);
  });

  // Anything else: a JSON 404 like every other answer here (not express's HTML page).
  app.use((req, res) => {
    res.status(404).json({ code: 'NOT_FOUND', message: `no route ${req.method} ${req.path.slice(0, 100)}` });
  });
  app.use((err: { status?: number; statusCode?: number }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    const status = err.status ?? err.statusCode ?? 500;
    res.status(status >= 400 && status < 600 ? status : 500).json({ code: status < 500 ? 'BAD_REQUEST' : 'INTERNAL', message: status < 500 ? 'bad request' : 'internal error' });
  });

  return app;
}
