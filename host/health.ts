/**
 * The host's health check of its enclave: a client handshake over the enclave's socket (a fresh
 * attestation document bound to a nonce this check drew, verified against the trusted root, debug mode
 * refused), then the `status` operation over the attested session for the enclave's ring state.
 *
 * The socket alone proves nothing: on Nitro it belongs to `socat UNIX-LISTEN,fork`, which accepts
 * whether or not an enclave is behind it. The host is untrusted, so what /healthz says is an operator's
 * signal, never a client's trust decision; but it is now the enclave itself that answers it.
 */
import net from 'node:net';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { connectHandshake, type AttestedPeer } from '../protocol/handshake.ts';
import { RpcClient } from '../protocol/rpc.ts';
import { AttestationError, verifyAttestation } from '../verifier/index.ts';
import { membersFromStatus } from './ring-hints.ts';

/** The whole check (connect, handshake, status) must finish within this. */
export const healthTimeoutMsDefault = 5000;
/** The document must be this fresh (it is made for our nonce, so it is seconds old at most). */
const healthDocAgeMaxMs = 60_000;

export type EnclaveState = 'serving' | 'not-serving' | 'down';

export interface HealthReport {
  ok: boolean;
  enclave: EnclaveState;
  /** Why the enclave is not serving or down: a stable code, then a message. */
  code?: string;
  reason?: string;
  pcr0?: string;
  /** Whether PCR0 is one the host was told to expect (absent: no expectation given). */
  pcr0Expected?: boolean;
  moduleId?: string;
  ring?: string;
  serving?: boolean;
  durable?: boolean;
  keys?: number;
  /** The ring members the enclave named (successors, predecessor): addresses only, hints for a later join. */
  members?: string[];
  /** When the check began (ISO): a report says nothing about an enclave launched after that. */
  checkedAt: string;
  latencyMs: number;
}

export interface HealthCheckOptions {
  enclaveSocket: string;
  /** PEM roots the document must chain to; default the AWS Nitro root (a local ring passes the emulator's). */
  roots?: string[];
  /** The PCR0s this host expects its enclave to run (the release's current and, during a roll, next). */
  expectPcr0?: string[];
  timeoutMs?: number;
  now?: () => number;
}

export async function checkEnclaveHealth(o: HealthCheckOptions): Promise<HealthReport> {
  const now = o.now ?? Date.now;
  const started = now();
  const timeoutMs = o.timeoutMs ?? healthTimeoutMsDefault;
  const socket = net.connect(o.enclaveSocket);
  socket.on('error', () => undefined); // reported through connected() or the handshake
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new EkvError('TIMEOUT', `no attested answer within ${timeoutMs} ms`)), timeoutMs);
  });
  let rpc: RpcClient | null = null;
  const base = () => ({ checkedAt: new Date(started).toISOString(), latencyMs: now() - started });
  try {
    const probe = async () => {
      await connected(socket);
      const fs = new FramedSocket(socket, handshakeBytesMax);
      let server: AttestedPeer | null = null;
      const r = await connectHandshake(fs, {
        mode: 'client',
        timeoutMs,
        verifyServer: async (doc, nonce) => {
          server = await verifyAttestation(doc, {
            ...(o.roots ? { roots: o.roots } : {}), nonce, maxAgeMs: healthDocAgeMaxMs, allowDebug: false, now: now(),
          });
          return server;
        },
      });
      rpc = new RpcClient(r.session);
      const status = await rpc.call('status', {}, timeoutMs);
      return { server: r.server, status };
    };
    const { server, status } = await Promise.race([probe(), timeout]);
    const pcr0 = Buffer.from(server.pcrs.get(0) ?? new Uint8Array()).toString('hex');
    const serving = status.serving === true && status.ring === 'active';
    const expected = o.expectPcr0 && o.expectPcr0.length > 0 ? o.expectPcr0.map((p) => p.toLowerCase()).includes(pcr0) : undefined;
    const report: HealthReport = {
      ok: serving && expected !== false,
      enclave: serving ? 'serving' : 'not-serving',
      pcr0,
      ...(expected !== undefined ? { pcr0Expected: expected } : {}),
      moduleId: server.moduleId,
      ring: String(status.ring),
      serving: status.serving === true,
      durable: status.durable !== false,
      ...(typeof status.keys === 'number' ? { keys: status.keys } : {}),
      members: membersFromStatus(status, typeof status.addr === 'string' ? status.addr : ''),
      ...base(),
    };
    if (!serving) Object.assign(report, { code: 'NOT_SERVING', reason: `ring ${String(status.ring)}, serving ${String(status.serving)}` });
    else if (expected === false) Object.assign(report, { code: 'UNEXPECTED_IMAGE', reason: `PCR0 ${pcr0} is not one of the release's` });
    return report;
  } catch (err) {
    const code = err instanceof AttestationError ? `UNATTESTED_${err.code}` : err instanceof EkvError ? err.code : 'DOWN';
    return { ok: false, enclave: 'down', code, reason: (err as Error).message.slice(0, 300), ...base() };
  } finally {
    clearTimeout(timer);
    (rpc as RpcClient | null)?.close();
    socket.destroy();
  }
}

function connected(s: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve());
    s.once('error', (err) => reject(new EkvError('UNAVAILABLE', `enclave socket: ${err.message}`)));
  });
}

/**
 * One check in flight at a time, and a result reused for `reuseMs`: /healthz may be polled by anyone the
 * security group lets in, and each check costs the enclave an NSM attestation.
 */
export function sharedHealth(check: () => Promise<HealthReport>, reuseMs = 1000, now: () => number = Date.now) {
  let inflight: Promise<HealthReport> | null = null;
  let last: { at: number; report: HealthReport } | null = null;
  return {
    get last(): HealthReport | null {
      return last?.report ?? null;
    },
    fresh(): Promise<HealthReport> {
      if (last && now() - last.at < reuseMs) return Promise.resolve(last.report);
      inflight ??= check().then((report) => {
        last = { at: now(), report };
        inflight = null;
        return report;
      });
      return inflight;
    },
  };
}
