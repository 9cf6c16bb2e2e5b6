/**
 * The enclave's metrics, fetched by the host over the enclave's host channel (enclave-5001.sock, which no
 * port of the host relays to; the 'metrics' hello: no session, no NSM work) and served with the host's own on /metrics, each sample labelled with the node. The answer
 * is checked strictly (protocol/metrics.ts) and bounded: whatever listens on that socket could send it.
 */
import net from 'node:net';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { requestMetrics } from '../protocol/handshake.ts';
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
