/**
 * The host's HTTP side (express): the enclave's attestation document for a
 * caller's nonce, health, and metrics. Nothing here is trusted by clients:
 * the document is checked by the client's own verifier.
 */
import express from 'express';
import net from 'node:net';
import type { Logger } from 'pino';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { requestAttestation } from '../protocol/handshake.ts';
import { handshakeBytesMax } from '../protocol/constants.ts';
import type { HostMetrics } from './metrics.ts';

export const attestationNonceBytesMax = 512;
const enclaveTimeoutMs = 5000;

export function fetchAttestation(enclaveSocket: string, nonce: Uint8Array): Promise<Buffer> {
  const socket = net.connect(enclaveSocket);
  const fs = new FramedSocket(socket, handshakeBytesMax);
  return requestAttestation(fs, nonce, enclaveTimeoutMs).finally(() => socket.destroy());
}

function enclaveReachable(enclaveSocket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(enclaveSocket);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}

export function createHttpApp(opts: { enclaveSocket: string; metrics: HostMetrics; logger: Logger; info: () => Record<string, unknown> }) {
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

  app.get('/healthz', async (_req, res) => {
    const up = await enclaveReachable(opts.enclaveSocket);
    res.status(up ? 200 : 503).json({ ok: up, enclave: up ? 'up' : 'down', ...opts.info() });
  });

  app.get('/metrics', async (_req, res) => {
    res.type(opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics());
  });

  return app;
}
