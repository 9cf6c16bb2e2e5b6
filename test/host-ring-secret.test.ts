// The ring-secret ciphertext between hosts (docs/membership.md): a member's host serves its copy at
// GET /v1/ring-secret; a joining node's host fetches it into its data directory before the enclave's first
// boot (ekv host --ring-secret URL), retrying while the member has none yet, and keeps a copy it already has.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpApp } from '../host/http.ts';
import { createMetrics } from '../host/metrics.ts';
import { fetchRingSecret, ringSecretBytesMax } from '../host/ring-secret.ts';

const logger = pino({ level: 'silent' });
let dir: string;
let server: Server;
let url: string;
const source = () => join(dir, 'member-ring-secret');

beforeAll(async () => {
  dir = mkdtempSync('/tmp/ekv-hrs-');
  const app = createHttpApp({ enclaveSocket: join(dir, 'none.sock'), metrics: createMetrics(), logger, info: () => ({}), ringSecretFile: source(),
    health: { fresh: async () => ({ ok: false, enclave: 'down' as const, checkedAt: '', latencyMs: 0 }) } });
  server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/ring-secret`;
});

afterAll(async () => {
  await new Promise((r) => server.close(() => r(undefined)));
  rmSync(dir, { recursive: true, force: true });
});

describe('the ring-secret between hosts', () => {
  it('a member without one answers 404; the fetch keeps retrying and writes nothing', async () => {
    expect((await fetch(url)).status).toBe(404);
    const dest = join(dir, 'a');
    const stop = new AbortController();
    setTimeout(() => stop.abort(), 300);
    expect(await fetchRingSecret(url, dest, { logger, retryMs: 50, signal: stop.signal })).toBe(false);
    expect(existsSync(dest)).toBe(false);
  });

  it('once the member has it, the fetch writes the same bytes', async () => {
    const dest = join(dir, 'b');
    const stop = new AbortController();
    const fetching = fetchRingSecret(url, dest, { logger, retryMs: 50, signal: stop.signal });
    await new Promise((r) => setTimeout(r, 120));
    writeFileSync(source(), Buffer.from('a1ciphertextblob', 'utf8'));
    expect(await fetching).toBe(true);
    expect(readFileSync(dest).toString()).toBe('a1ciphertextblob');
    stop.abort();
  });

  it('a copy already there is kept; an oversized one is not served', async () => {
    const dest = join(dir, 'c');
    writeFileSync(dest, 'mine');
    expect(await fetchRingSecret(url, dest, { logger, retryMs: 50 })).toBe(true);
    expect(readFileSync(dest).toString()).toBe('mine');
    writeFileSync(source(), Buffer.alloc(ringSecretBytesMax + 1, 1));
    expect((await fetch(url)).status).toBe(404);
  });
});
