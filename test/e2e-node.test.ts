// One emulated node end to end: the SDK, the CLI, and the host's HTTP side.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, EkvError, type EkvClient } from '../client/index.ts';
import { keyBytesMax, valueBytesMax } from '../protocol/constants.ts';
import { AttestationError, verifyAttestation } from '../verifier/index.ts';
import { startTestRing, type TestRing } from './helpers/local-ring.ts';

const ekvBin = fileURLToPath(new URL('../bin/ekv.js', import.meta.url));

let t: TestRing;
let kv: EkvClient;

beforeAll(async () => {
  t = await startTestRing({ nodes: 1 });
  kv = await connect({ cluster: t.clusterFile, trustClusterFile: true, timeoutMs: 5000 });
});

afterAll(async () => {
  await kv?.close();
  await t?.stop();
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(EkvError);
    return (err as EkvError).code;
  }
  return 'OK';
}

/** The host's counter of inbound relayed connections, from /metrics. */
async function inboundConnections(): Promise<number> {
  const text = await (await fetch(`${t.node().http}/metrics`)).text();
  const m = /^ekv_host_connections_total\{direction="inbound"\} (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

describe('SDK against one node', () => {
  it('puts, gets and deletes with per-key versions', async () => {
    expect(await kv.put('alpha', 'one')).toBe(1);
    expect(await kv.put('alpha', 'two')).toBe(2);
    const r = await kv.getWithVersion('alpha');
    expect([r.value.toString(), r.version]).toEqual(['two', 2]);
    expect(await kv.delete('alpha')).toEqual({ deleted: true, version: 3 });
    expect(await codeOf(kv.get('alpha'))).toBe('NOT_FOUND');
    // Deleting a key without a value is not an error: the SDK says it did not exist.
    expect(await kv.delete('alpha')).toEqual({ deleted: false, version: 0 });
    // A key written after its delete continues the version sequence (the tombstone kept it).
    expect(await kv.put('alpha', 'three')).toBe(4);
  });

  it('stores arbitrary bytes, including an empty value', async () => {
    const key = randomBytes(64);
    const value = randomBytes(4096);
    await kv.put(key, value);
    expect((await kv.get(key)).equals(value)).toBe(true);
    await kv.put('empty', new Uint8Array(0));
    expect((await kv.get('empty')).length).toBe(0);
  });

  it('refuses a missing key with NOT_FOUND', async () => {
    const err = await kv.get('never-written').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EkvError);
    expect((err as EkvError).code).toBe('NOT_FOUND');
  });

  it('enforces the key and value size limits at their edges', async () => {
    expect(await codeOf(kv.put(Buffer.alloc(keyBytesMax, 1), 'x'))).toBe('OK');
    expect(await codeOf(kv.put(Buffer.alloc(keyBytesMax + 1, 1), 'x'))).toBe('KEY_TOO_LARGE');
    expect(await codeOf(kv.get(Buffer.alloc(keyBytesMax + 1, 1)))).toBe('KEY_TOO_LARGE');
    expect(await codeOf(kv.put('max-value', Buffer.alloc(valueBytesMax, 2)))).toBe('OK');
    expect((await kv.get('max-value')).length).toBe(valueBytesMax);
    expect(await codeOf(kv.put('big', Buffer.alloc(valueBytesMax + 1, 3)))).toBe('VALUE_TOO_LARGE');
    expect(await codeOf(kv.put(Buffer.alloc(0), 'x'))).toBe('BAD_REQUEST');
    // The connection survived every refusal.
    expect((await kv.get(Buffer.alloc(keyBytesMax, 1))).toString()).toBe('x');
  });

  // The SDK checks sizes before sending: an oversized frame would make the enclave drop the whole
  // connection (FRAME_TOO_LARGE) and fail every other request in flight on it.
  it('refuses an oversized value locally, without breaking other requests in flight', async () => {
    await kv.put('bystander', 'ok');
    const bystanders = Array.from({ length: 20 }, () => kv.get('bystander'));
    const huge = codeOf(kv.put('huge', Buffer.alloc(2 * valueBytesMax)));
    const results = await Promise.allSettled(bystanders);
    expect(await huge).toBe('VALUE_TOO_LARGE');
    expect(results.filter((r) => r.status === 'fulfilled' && r.value.toString() === 'ok')).toHaveLength(20);
  });

  it('keeps thousands of requests in flight on one connection, each answered correctly', async () => {
    const c = await connect({ cluster: t.clusterFile, trustClusterFile: true, timeoutMs: 20_000 });
    try {
      await c.verifyAll();
      const before = await inboundConnections();
      const n = 3000;
      const keys = Array.from({ length: n }, (_, i) => `conc-${i}`);
      const versions = await Promise.all(keys.map((k) => c.put(k, `value of ${k}`)));
      expect(versions.every((v) => v === 1)).toBe(true);
      const values = await Promise.all(keys.map((k) => c.get(k)));
      expect(values.map((v) => v.toString())).toEqual(keys.map((k) => `value of ${k}`));
      // Mixed operations racing on the same keys still return only values we wrote.
      const mixed = await Promise.all(keys.slice(0, 500).flatMap((k) => [c.put(k, `second ${k}`).then(() => null), c.get(k)]));
      for (const [i, v] of mixed.entries()) {
        if (v === null) continue;
        const k = keys[Math.floor(i / 2)] as string;
        expect([`value of ${k}`, `second ${k}`]).toContain(v.toString());
      }
      // All of it went over the one connection already open.
      expect(await inboundConnections()).toBe(before);
    } finally {
      await c.close();
    }
  });
});

// ------------------------------------------------------------------ CLI

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function ekv(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [ekvBin, ...args, '-c', t.clusterFile], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe.concurrent('CLI', () => {
  it('put, get (value on stdout), del, then get: NOT_FOUND on stderr and exit 1', async () => {
    const put = await ekv(['put', 'cli-key', 'cli value']);
    expect(put).toMatchObject({ code: 0, stdout: 'OK\n' });
    const get = await ekv(['get', 'cli-key']);
    expect(get).toMatchObject({ code: 0, stdout: 'cli value' });
    expect(await ekv(['del', 'cli-key'])).toMatchObject({ code: 0 });
    const missing = await ekv(['get', 'cli-key']);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toMatch(/^NOT_FOUND\b/);
  });

  it('put --if-version: CONFLICT with the current version (exit 1); del of a missing key exits 0', async () => {
    expect(await ekv(['put', 'cas-key', 'a', '--if-version', '0'])).toMatchObject({ code: 0, stdout: 'OK\n' });
    const lost = await ekv(['put', 'cas-key', 'b', '--if-version', '0', '--json']);
    expect(lost.code).toBe(1);
    expect(JSON.parse(lost.stdout)).toMatchObject({ ok: false, code: 'CONFLICT', version: 1 });
    expect(await ekv(['del', 'cas-key', '--if-version', '1'])).toMatchObject({ code: 0, stdout: 'OK\n' });
    expect(await ekv(['del', 'cas-key'])).toMatchObject({ code: 0, stdout: 'OK (no such key)\n' });
    expect((await ekv(['put', 'cas-key', 'c', '--if-version', 'x'])).code).toBe(2);
  });

  it('--json prints one object with versions, and errors as JSON with exit 1', async () => {
    const [put, attest] = await Promise.all([ekv(['put', 'json-key', 'v1', '--json']), ekv(['attest', t.node().addr, '--json'])]);
    expect(put.code).toBe(0);
    expect(JSON.parse(put.stdout)).toMatchObject({ ok: true, key: 'json-key', version: 1 });
    const get = await ekv(['get', 'json-key', '--json']);
    expect(JSON.parse(get.stdout)).toMatchObject({ ok: true, key: 'json-key', version: 1, value: 'v1', valueHex: Buffer.from('v1').toString('hex') });
    const del = await ekv(['del', 'json-key', '--json']);
    expect(JSON.parse(del.stdout)).toMatchObject({ ok: true, deleted: true, version: 2 });
    const missing = await ekv(['get', 'json-key', '--json']);
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, code: 'NOT_FOUND' });

    expect(attest.code).toBe(0);
    const a = JSON.parse(attest.stdout) as { ok: boolean; pcrs: Record<string, string>; identityKey: string; address: string };
    expect(a.ok).toBe(true);
    expect(a.address).toBe(t.node().addr);
    expect(a.pcrs['0']).toBe(t.cluster.trust.pcrs?.['0']);
    expect(a.identityKey).toMatch(/^[0-9a-f]{64}$/);
    // The identity the CLI saw is the one the SDK's session is bound to.
    await kv.put('probe', 'x');
    const conn = kv.node(t.node().addr);
    expect(conn.identityKey?.toString('hex')).toBe(a.identityKey);
  });
});

// ------------------------------------------------------------------ host HTTP

describe('host HTTP side', () => {
  it('GET /v1/attestation returns a CBOR document the verifier accepts for that nonce', async () => {
    const nonce = randomBytes(32);
    const res = await fetch(`${t.node().http}/v1/attestation?nonce=${nonce.toString('hex')}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/cbor/);
    const doc = new Uint8Array(await res.arrayBuffer());
    const roots = t.cluster.trust.roots as string[];
    const pcrs = t.cluster.trust.pcrs as Record<string, string>;
    const v = await verifyAttestation(doc, { roots, nonce, pcrs: { 0: pcrs['0'] as string, 1: pcrs['1'] as string, 2: pcrs['2'] as string } });
    expect(Buffer.from(v.nonce as Uint8Array).equals(nonce)).toBe(true);
    expect(v.publicKey?.length).toBe(32);
    // Bound to that nonce only.
    const other = await verifyAttestation(doc, { roots, nonce: randomBytes(32) }).catch((e: unknown) => e);
    expect((other as AttestationError).code).toBe('NONCE_MISMATCH');
  });

  it('refuses a malformed nonce with 400', async () => {
    for (const nonce of ['zz', 'abc', 'ab'.repeat(513), '%00']) {
      const res = await fetch(`${t.node().http}/v1/attestation?nonce=${nonce}`);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe('BAD_REQUEST');
    }
  });

  it('/healthz reports the enclave serving, from an attested handshake', async () => {
    const res = await fetch(`${t.node().http}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true, enclave: 'serving', ring: 'active', pcr0: expect.stringMatching(/^[0-9a-f]{96}$/) });
  });

  it('/metrics is Prometheus text with the relay counters', async () => {
    const res = await fetch(`${t.node().http}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toMatch(/^# TYPE ekv_host_connections_total counter$/m);
    expect(text).toMatch(/^ekv_host_relayed_bytes_total\{direction="inbound"\} \d+/m);
    expect(text).toMatch(/^ekv_host_attestation_requests_total\{result="ok"\} \d+/m);
    // Every non-comment line is `name{labels} value`.
    for (const line of text.split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfNa]+$/);
    }
  });
});
