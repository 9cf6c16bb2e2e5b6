/**
 * The enclave's metrics, fetched by the host over the enclave's host channel (enclave-5001.sock, which no
 * port of the host relays to; the 'metrics' hello: no session, no NSM work) and served with the host's own on /metrics, each sample labelled with the node. The answer
 * is checked strictly (protocol/metrics.ts) and bounded: whatever listens on that socket could send it.
 */
import net from 'node:net';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { requestDecommission, requestMetrics } from '../protocol/handshake.ts';
import { metricsBytesMax, parseMetricsSnapshot, renderPrometheus, type MetricsSnapshot } from '../protocol/metrics.ts';

export const enclaveMetricsTimeoutMs = 2000;

export async function fetchEnclaveMetrics(enclaveSocket: string, timeoutMs = enclaveMetricsTimeoutMs): Promise<MetricsSnapshot> {
  const socket = net.connect(enclaveSocket);
  socket.on('error', () => undefined);
  const fs = new FramedSocket(socket, metricsBytesMax);
  try {
    return parseMetricsSnapshot(await requestMetrics(fs, timeoutMs));
  } finally {
    socket.destroy();
  }
}

/** The enclave's families as Prometheus text with `node`; an unreachable enclave adds nothing (see ekv_host_enclave_up). */
export async function enclaveMetricsText(enclaveSocket: string, node: string): Promise<{ up: boolean; text: string; error?: string }> {
  try {
    const snap = await fetchEnclaveMetrics(enclaveSocket);
    return { up: true, text: renderPrometheus(snap, { node }) };
  } catch (err) {
    return { up: false, text: '', error: (err as Error).message };
  }
}

/** What a decommission did: retired (or refused), ranges that still named the node, and whether co-members echoed it. */
export interface DecommissionOutcome {
  retired: boolean;
  rangesStillNamingIt: number;
  heard: boolean;
}

/**
 * How long the host waits for a decommission's answer: the enclave waits up to `waitMs` (default 30 s) for its
 * ranges to move, up to 30 s for its own state check, up to 30 s for the echoes, then leaves the Chord ring (up to
 * 1 s). review-8 F3: a fixed 90 s was shorter than that (and than any waitMs above 30 s): the host gave up, wrote no
 * marker and exited 0 (systemd restarted a node whose enclave had retired), so the margin is added to the wait.
 */
export function decommissionTimeoutFor(waitMs?: number): number {
  return (waitMs ?? 30_000) + 2 * 30_000 + 15_000;
}
export const decommissionTimeoutMs = decommissionTimeoutFor();

/**
 * Asks the enclave over its host channel to leave for good (docs/consistency.md, "Retirement"); resolves with
 * its outcome (`retired`: false when a range naming it has fewer than three members, and it only left).
 */
export async function decommissionEnclave(enclaveSocket: string, o: { timeoutMs?: number; waitMs?: number } = {}): Promise<DecommissionOutcome> {
  const socket = net.connect(enclaveSocket);
  socket.on('error', () => undefined);
  const fs = new FramedSocket(socket, metricsBytesMax);
  try {
    const r = await requestDecommission(fs, o.timeoutMs ?? decommissionTimeoutFor(o.waitMs), o.waitMs);
    const a = (typeof r === 'object' && r !== null ? r : {}) as Record<string, unknown>;
    return { retired: a.retired === true, rangesStillNamingIt: typeof a.rangesStillNamingIt === 'number' ? a.rangesStillNamingIt : -1, heard: a.heard === true };
  } finally {
    socket.destroy();
  }
}

/**
 * SIGUSR2 of `ekv host` and `ekv node`: decommission (docs/consistency.md, "Retirement"). The enclave leaves,
 * waits for its ranges to move and retires for good, so that its co-members' restarts never wait for it; the
 * caller then stops as on SIGTERM (`systemctl kill -s USR2 ekv-host` on an instance). The enclave's sealed state
 * never comes back as this member, nor as a new one: started again, it stays retired (acts in nothing); a new
 * node needs a fresh data directory (a new identity).
 */
export async function decommissionLogged(
  ask: () => Promise<DecommissionOutcome>,
  logger: { info(o: object, m: string): void; warn(o: object, m: string): void },
): Promise<DecommissionOutcome | null> {
  try {
    const r = await ask();
    if (r.retired) logger.info({ rangesStillNamingIt: r.rangesStillNamingIt, heard: r.heard }, 'decommissioned: the enclave retired for good');
    else logger.warn({ code: 'REFUSED', rangesStillNamingIt: r.rangesStillNamingIt }, 'not retired: a range naming this node has fewer than three members; it only left');
    return r;
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'decommission failed: stopping anyway (a crash-stop for the ring)');
    return null;
  }
}
