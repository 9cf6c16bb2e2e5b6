// infra/monitoring/: every metric the alert rules and the Grafana dashboard reference is one the code exports
// (the enclave's registry, the node gauges, the host's prom-client registry); the rules the issue asks for are
// there; and promtool accepts the rules and the example config when it is installed.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createMetricsRegistry, enclaveMetrics } from '../enclave/metrics.ts';
import { registerNodeMetrics } from '../enclave/node-metrics.ts';
import { createMetrics } from '../host/metrics.ts';

const dir = new URL('../infra/monitoring/', import.meta.url);
const alerts = readFileSync(new URL('alerts.yml', dir), 'utf8');
const dashboard = JSON.parse(readFileSync(new URL('grafana-dashboard.json', dir), 'utf8')) as { panels: Array<{ title: string; targets: Array<{ expr: string }> }> };
const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => existsSync(p));

async function exportedNames(): Promise<Set<string>> {
  const node = createMetricsRegistry();
  registerNodeMetrics({ status: () => ({}), bytes: () => 0, startedAt: 0 }, node);
  const fams = [...enclaveMetrics.families(), ...node.families()];
  const host = await createMetrics().registry.getMetricsAsJSON();
  const all = [...fams, ...host.map((m) => ({ name: m.name, type: String(m.type) }))];
  const names = new Set<string>(['up']);
  for (const f of all) {
    names.add(f.name);
    if (f.type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(f.name + s);
  }
  return names;
}

/** Metric names in a PromQL expression: identifiers starting ekv_ (ours) or `up`. */
function referenced(expr: string): string[] {
  return [...expr.matchAll(/\b(ekv_[a-z0-9_]+|up)\b(?=\s*[{[)\s<>=!-]|$)/g)].map((m) => m[1] as string);
}

describe('infra/monitoring', () => {
  it('references only metrics the code exports', async () => {
    const names = await exportedNames();
    const exprs = [
      ...[...alerts.matchAll(/^\s*expr:\s*(.+)$/gm)].map((m) => ({ where: 'alerts.yml', expr: m[1] as string })),
      ...dashboard.panels.flatMap((p) => p.targets.map((t) => ({ where: `dashboard "${p.title}"`, expr: t.expr }))),
    ];
    expect(exprs.length).toBeGreaterThan(20);
    const unknown = exprs.flatMap(({ where, expr }) => referenced(expr).filter((n) => !names.has(n)).map((n) => `${where}: ${n}`));
    expect(unknown).toEqual([]);
    // Every expression names at least one metric (a typo that breaks the pattern must not pass unseen).
    expect(exprs.filter(({ expr }) => referenced(expr).length === 0)).toEqual([]);
  });

  it('has the alerts an operator needs', () => {
    const alertNames = [...alerts.matchAll(/^\s*- alert:\s*(\S+)/gm)].map((m) => m[1]);
    for (const a of ['EkvHostDown', 'EkvEnclaveDown', 'EkvNodeNotServing', 'EkvRereplicationBacklogGrowing', 'EkvSealErrors', 'EkvKmsErrors', 'EkvAttestationDocumentExpiring', 'EkvRangeUnderReplicated', 'EkvLeaseNotRenewed', 'EkvReplicationRetrying']) {
      expect(alertNames).toContain(a);
    }
  });

  it.skipIf(!promtool)('promtool accepts the rules and the example config', () => {
    const out = execFileSync(promtool as string, ['check', 'rules', new URL('alerts.yml', dir).pathname], { encoding: 'utf8' });
    expect(out).toMatch(/SUCCESS: \d+ rules found/);
    execFileSync(promtool as string, ['check', 'config', new URL('prometheus.example.yml', dir).pathname], { encoding: 'utf8' });
  });
  if (!promtool) console.warn('SKIPPED promtool checks in test/monitoring.test.ts: promtool not installed (apt-get install prometheus)');
});
