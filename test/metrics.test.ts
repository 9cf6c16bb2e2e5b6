// Enclave metrics: the registry and its wire check (pure), then a real node: the host's /metrics carries the
// enclave's families labelled by node (requests by op and code, latency, keys and bytes, ring state, sealed
// log, KMS, attestation), nothing naming a key or value; the same snapshot over an attested session; an
// unreachable enclave shows as ekv_host_enclave_up 0; unknown paths are JSON 404s.
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type EkvClient } from '../client/index.ts';
import { createMetricsRegistry, seriesPerFamilyMax } from '../enclave/metrics.ts';
import { loopbackOnly, startHost } from '../host/host.ts';
import { encodeCbor } from '../protocol/cbor.ts';
import { encodeFrame } from '../protocol/frame.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { requestMetrics } from '../protocol/handshake.ts';
import { metricsBytesMax, parseMetricsSnapshot, renderPrometheus } from '../protocol/metrics.ts';
import { shortTempDir, startTestRing, testLogger, type TestRing } from './helpers/local-ring.ts';

/** Prometheus text -> [name, labels, value] rows (enough of the format for our own output). */
export function parseProm(text: string): Array<{ name: string; labels: Record<string, string>; value: number }> {
  const rows: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const lm of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1] as string] = lm[2] as string;
    rows.push({ name: m[1] as string, labels, value: m[4] === '+Inf' ? Infinity : Number(m[4]) });
  }
  return rows;
}

describe('the enclave metrics registry and its wire check', () => {
  it('counts by closed labels, folds anything else into other, caps the series, and renders cumulative buckets', () => {
    const r = createMetricsRegistry();
    const c = r.counter('ekv_enclave_t_total', 'test', ['op']);
    c.inc({ op: 'get' });
    c.inc({ op: 'get' }, 2);
    c.inc({ op: 'a key "with" quotes\n' });
    for (let i = 0; i < seriesPerFamilyMax + 10; i++) c.inc({ op: `op${i}` });
    const h = r.histogram('ekv_enclave_t_seconds', 'test', [], [0.01, 0.1]);
    h.observe(0.005);
    h.observe(0.05);
    h.observe(5);
    const snap = parseMetricsSnapshot(r.snapshot());
    const fam = snap.f.find((f) => f.n === 'ekv_enclave_t_total')!;
    expect(fam.s.length).toBeLessThanOrEqual(seriesPerFamilyMax);
    expect(fam.s.find((s) => s[1].op === 'get')?.[2]).toBe(3);
    expect(fam.s.some((s) => s[1].op?.includes('"'))).toBe(false);
    const rows = parseProm(renderPrometheus(snap, { node: 'n1' }));
    const buckets = rows.filter((x) => x.name === 'ekv_enclave_t_seconds_bucket').map((x) => [x.labels.le, x.value]);
    expect(buckets).toEqual([['0.01', 1], ['0.1', 2], ['+Inf', 3]]);
    expect(rows.every((x) => x.labels.node === 'n1')).toBe(true);
  });

  it('refuses a snapshot with a foreign name, a node label, an injected label value, or too many samples', () => {
    const ok = { v: 1, at: 1, f: [{ n: 'ekv_enclave_x', t: 'gauge', h: 'h', s: [['', { a: 'b' }, 1]] }] };
    expect(() => parseMetricsSnapshot(ok)).not.toThrow();
    const variants: unknown[] = [
      { ...ok, f: [{ ...ok.f[0], n: 'process_cpu_seconds_total' }] },
      { ...ok, f: [{ ...ok.f[0], s: [['', { node: 'spoof' }, 1]] }] },
      { ...ok, f: [{ ...ok.f[0], s: [['', { a: 'x"} 1\nekv_enclave_y 2' }, 1]] }] },
      { ...ok, f: [{ ...ok.f[0], s: [['_bucket', {}, 1]] }] },
      { ...ok, f: [{ ...ok.f[0], s: Array.from({ length: 9000 }, () => ['', {}, 1]) }] },
      { ...ok, f: [ok.f[0], ok.f[0]] },
      { ...ok, v: 2 },
      null,
    ];
    for (const v of variants) expect(() => parseMetricsSnapshot(v), JSON.stringify(v)?.slice(0, 80)).toThrow(/metrics snapshot/);
  });
});

describe('a node exports its enclave metrics through its host', () => {
  let ring: TestRing;
  let kv: EkvClient;
  beforeAll(async () => {
    ring = await startTestRing({ nodes: 1 });
    kv = await connect({ cluster: ring.cluster, trustClusterFile: true, timeoutMs: 10_000 });
  }, 60_000);
  afterAll(async () => {
    await kv?.close();
    await ring?.stop();
  });

  it('GET /metrics: requests by op and code, latency, keys, bytes, ring state, sealed log, KMS, attestation, labelled by node', async () => {
    const secretKey = 'metrics-secret-key-7f3a';
    const secretValue = 'metrics-secret-value-c91e';
    for (let i = 0; i < 5; i++) await kv.put(`${secretKey}-${i}`, `${secretValue}-${i}`);
    await kv.get(`${secretKey}-0`);
    await expect(kv.get('metrics-absent')).rejects.toMatchObject({ code: 'NOT_FOUND' });

    const node = ring.node(0);
    const res = await fetch(`${node.http}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain(secretKey);
    expect(text).not.toContain(secretValue);
    const rows = parseProm(text);
    const one = (name: string, labels: Record<string, string> = {}) => {
      const hit = rows.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
      if (hit.length === 0) throw new Error(`no ${name} ${JSON.stringify(labels)} in:\n${text.split('\n').filter((l) => l.startsWith('ekv_')).join('\n')}`);
      return hit.reduce((s, x) => s + x.value, 0);
    };
    const nodeLabel = { node: node.addr };
    expect(one('ekv_host_enclave_up', nodeLabel)).toBe(1);
    expect(one('ekv_enclave_requests_total', { ...nodeLabel, op: 'put', caller: 'client', code: 'ok' })).toBeGreaterThanOrEqual(5);
    expect(one('ekv_enclave_requests_total', { ...nodeLabel, op: 'get', code: 'NOT_FOUND' })).toBe(1);
    expect(one('ekv_enclave_request_duration_seconds_bucket', { ...nodeLabel, op: 'put', le: '+Inf' })).toBeGreaterThanOrEqual(5);
    expect(one('ekv_enclave_keys', nodeLabel)).toBe(5);
    expect(one('ekv_enclave_bytes', nodeLabel)).toBeGreaterThanOrEqual(5 * (secretKey.length + secretValue.length));
    expect(one('ekv_enclave_serving', nodeLabel)).toBe(1);
    expect(one('ekv_enclave_durable', nodeLabel)).toBe(1);
    const loopDelay = one('ekv_enclave_event_loop_delay_max_seconds', nodeLabel);
    expect(loopDelay).toBeGreaterThan(0);
    expect(loopDelay).toBeLessThan(60);
    expect(one('ekv_enclave_seal_appends_total', nodeLabel)).toBeGreaterThanOrEqual(5);
    expect(one('ekv_enclave_seal_fsync_duration_seconds_count', nodeLabel)).toBeGreaterThanOrEqual(1);
    expect(one('ekv_enclave_kms_calls_total', { ...nodeLabel, result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(one('ekv_enclave_attestations_total', { ...nodeLabel, result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(Date.now() / 1000 - one('ekv_enclave_attestation_last_timestamp_seconds', nodeLabel)).toBeLessThan(600);
    expect(one('ekv_enclave_attestation_chain_not_after_timestamp_seconds', nodeLabel)).toBeGreaterThan(Date.now() / 1000);
    expect(one('ekv_enclave_handshakes_total', { ...nodeLabel, mode: 'client', result: 'ok' })).toBeGreaterThanOrEqual(1);
    // The host's own families are still there.
    expect(one('ekv_host_connections_total', { direction: 'inbound' })).toBeGreaterThanOrEqual(1);
  });

  it('data layer: epoch and lease per range, ranges owned and leased; a ttl put expires through the SDK and is counted', async () => {
    const node = ring.node(0);
    const t0 = Date.now();
    expect(await kv.put('metrics-ttl', 'short-lived', { ttlMs: 300 })).toBe(1);
    expect((await kv.get('metrics-ttl')).toString()).toBe('short-lived');
    // Never early: absent only once 300 ms have passed (counted by the enclave from when it applied the write).
    let gone: unknown = null;
    for (const deadline = Date.now() + 20_000; Date.now() < deadline && gone === null;) {
      await kv.get('metrics-ttl').then(() => new Promise((r) => setTimeout(r, 50)), (err: unknown) => { gone = err; });
    }
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    // NOT_FOUND with the tombstone's version (above the value's), so the client floor accepts it.
    expect(gone).toMatchObject({ code: 'NOT_FOUND', version: 2 });
    await expect(kv.put('metrics-ttl', 'x', { ttlMs: 0 })).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    const rows = parseProm(await (await fetch(`${node.http}/metrics`)).text());
    const val = (name: string, labels: Record<string, string> = {}) => rows.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
    const nodeLabel = { node: node.addr };
    expect(val('ekv_enclave_ranges_owned', nodeLabel)[0]?.value).toBe(64);
    expect(val('ekv_enclave_ranges_leased', nodeLabel)[0]?.value).toBe(64);
    expect(val('ekv_enclave_ranges_member', nodeLabel)[0]?.value).toBe(64);
    expect(val('ekv_enclave_ranges_under_replicated', nodeLabel)[0]?.value).toBe(0);
    expect(val('ekv_enclave_epoch', nodeLabel)[0]?.value).toBeGreaterThanOrEqual(1);
    const epochs = val('ekv_enclave_range_epoch', nodeLabel);
    expect(epochs.map((x) => x.labels.range).sort((a, b) => Number(a) - Number(b))).toEqual(Array.from({ length: 64 }, (_, i) => String(i)));
    expect(epochs.every((x) => x.value >= 1)).toBe(true);
    expect(val('ekv_enclave_expired_collected_total', nodeLabel)[0]?.value).toBeGreaterThanOrEqual(1);
    expect(val('ekv_enclave_rereplication_backlog', nodeLabel)[0]?.value).toBe(0);
    expect(val('ekv_enclave_replication_retries_total', nodeLabel)).toHaveLength(1);
  });

  it('the same snapshot over an attested session (the dashboard\'s channel)', async () => {
    const r = await kv.node(ring.node(0).addr).call('metrics', {});
    const snap = parseMetricsSnapshot(r.m);
    expect(snap.f.find((f) => f.n === 'ekv_enclave_keys')?.s[0]?.[2]).toBe(5);
  });

  it('the metrics hello through the client port is refused; an open ring\'s status still carries counts for anyone', async () => {
    // review-4 A1: the client port relays to the enclave's client socket, which no longer offers the mode; the
    // host reads the snapshot on its own socket (enclave-5001.sock), so /metrics above still has it.
    const [host, port] = ring.node(0).addr.split(':') as [string, string];
    const socket = net.connect(Number(port), host);
    socket.on('error', () => undefined);
    try {
      await expect(requestMetrics(new FramedSocket(socket, metricsBytesMax), 5000)).rejects.toMatchObject({ code: 'UNAVAILABLE', reason: 'FORBIDDEN' });
    } finally {
      socket.destroy();
    }
    const anon = (await kv.node(ring.node(0).addr).call('status', {}));
    expect(typeof anon.keys).toBe('number');
  });

  it('answers unknown paths with a JSON 404', async () => {
    const res = await fetch(`${ring.node(0).http}/no/such/path`);
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toMatch(/application\/json/);
    expect(await res.json()).toMatchObject({ code: 'NOT_FOUND' });
  });
});

it('a host whose enclave does not answer serves its own metrics and ekv_host_enclave_up 0', async () => {
  const dir = shortTempDir();
  const host = await startHost({ vsockDir: dir, listenHost: '127.0.0.1', listenPort: 0, httpPort: 0, outboundPolicy: loopbackOnly, logger: testLogger(), nodeName: 'lonely' });
  try {
    const rows = parseProm(await (await fetch(`http://127.0.0.1:${host.httpPort}/metrics`)).text());
    expect(rows.find((x) => x.name === 'ekv_host_enclave_up')).toMatchObject({ labels: { node: 'lonely' }, value: 0 });
    expect(rows.some((x) => x.name.startsWith('ekv_enclave_'))).toBe(false);
  } finally {
    await host.close();
  }
});

it('a host refuses what a non-enclave on the enclave socket answers: no injected sample, ekv_host_enclave_up 0', async () => {
  const dir = shortTempDir();
  const answers: Buffer[] = [
    // A label value that would break out of its quotes and add a sample of its own.
    encodeFrame(encodeCbor({ t: 'metrics', m: { v: 1, at: 1, f: [{ n: 'ekv_enclave_x', t: 'gauge', h: 'h', s: [['', { a: 'x"} 1\nekv_enclave_injected 2' }, 1]] }] } })),
    // A family that is not ours, claiming to be the host's own.
    encodeFrame(encodeCbor({ t: 'metrics', m: { v: 1, at: 1, f: [{ n: 'ekv_host_connections_total', t: 'counter', h: 'h', s: [['', {}, 1e9]] }] } })),
    // A length prefix of 2 GiB (never allocated).
    Buffer.from([0x7f, 0xff, 0xff, 0xff]),
  ];
  let turn = 0;
  const fake = net.createServer((c) => {
    c.on('error', () => undefined);
    c.once('data', () => c.end(answers[turn++ % answers.length] as Buffer));
  });
  await new Promise<void>((r) => fake.listen(join(dir, 'enclave-5001.sock'), () => r()));
  const host = await startHost({ vsockDir: dir, listenHost: '127.0.0.1', listenPort: 0, httpPort: 0, outboundPolicy: loopbackOnly, logger: testLogger(), nodeName: 'n1' });
  try {
    for (let i = 0; i < answers.length; i++) {
      const text = await (await fetch(`http://127.0.0.1:${host.httpPort}/metrics`)).text();
      const rows = parseProm(text);
      expect(rows.find((x) => x.name === 'ekv_host_enclave_up')?.value).toBe(0);
      expect(text).not.toMatch(/injected/);
      expect(rows.filter((x) => x.name === 'ekv_host_connections_total' && x.value >= 1e9)).toEqual([]);
      expect(rows.some((x) => x.name.startsWith('ekv_enclave_'))).toBe(false);
    }
  } finally {
    await host.close();
    await new Promise<void>((r) => fake.close(() => r()));
  }
});
