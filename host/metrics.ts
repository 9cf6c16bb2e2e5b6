/** Prometheus metrics of one host proxy (prom-client, its own registry). */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { RelayCounters } from './relay.ts';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'ekv_host_' });
  const connections = new Counter({ name: 'ekv_host_connections_total', help: 'Relayed connections', labelNames: ['direction'], registers: [registry] });
  const active = new Gauge({ name: 'ekv_host_connections_active', help: 'Relayed connections open now', labelNames: ['direction'], registers: [registry] });
  const bytes = new Counter({ name: 'ekv_host_relayed_bytes_total', help: 'Bytes relayed (both ways)', labelNames: ['direction'], registers: [registry] });
  const attestations = new Counter({ name: 'ekv_host_attestation_requests_total', help: 'GET /v1/attestation requests', labelNames: ['result'], registers: [registry] });
  const healthChecks = new Counter({ name: 'ekv_host_health_checks_total', help: 'Attested health checks of the enclave, by the state found', labelNames: ['result'], registers: [registry] });
  const enclaveUp = new Gauge({ name: 'ekv_host_enclave_up', help: '1 when the enclave answered the last metrics fetch (its ekv_enclave_* families follow, labelled by node)', labelNames: ['node'], registers: [registry] });
  const counters: RelayCounters = {
    onConnection: (d) => {
      connections.inc({ direction: d });
      active.inc({ direction: d });
    },
    onClose: (d) => active.dec({ direction: d }),
    onBytes: (d, n) => bytes.inc({ direction: d }, n),
  };
  return { registry, counters, attestations, healthChecks, enclaveUp };
}
export type HostMetrics = ReturnType<typeof createMetrics>;
