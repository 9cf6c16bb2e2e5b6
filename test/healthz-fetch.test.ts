// The CLI's read of a host's /healthz (cli/healthz.ts; review-17's open item): the host is untrusted, so its
// answer is bounded before it is buffered and only integer pids are kept.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { fetchHostPids, healthzBytesMax } from '../cli/healthz.ts';

let server: http.Server | null = null;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = null;
});

async function serve(handler: http.RequestListener): Promise<string> {
  server = http.createServer(handler);
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
}

describe('fetchHostPids: the host\'s /healthz', () => {
  it('keeps the integer pids of an honest answer', async () => {
    const base = await serve((_q, s) => s.end(JSON.stringify({ ok: true, pids: { host: 10, emulator: 11, enclave: 12 } })));
    expect(await fetchHostPids(base, 2000)).toEqual({ host: 10, emulator: 11, enclave: 12 });
  });

  it('keeps no string, fraction or negative a hostile host puts in the pids (nothing reaches a terminal)', async () => {
    const base = await serve((_q, s) => s.end(JSON.stringify({ pids: { host: '\u001b[2J\u001b[31mOK', emulator: 1.5, enclave: -3 } })));
    expect(await fetchHostPids(base, 2000)).toEqual({ host: null, emulator: null, enclave: null });
  });

  it('stops reading an endless body past the bound instead of buffering it', async () => {
    let sent = 0;
    const base = await serve((_q, s) => {
      s.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const pump = (): void => {
        while (sent < 1024 * 1024 * 1024) {
          sent += chunk.length;
          if (!s.write(chunk)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      s.on('close', () => undefined);
      pump();
    });
    const t0 = Date.now();
    expect(await fetchHostPids(base, 10_000)).toBeNull();
    expect(Date.now() - t0).toBeLessThan(5000);
    // It read about the bound, not the gigabyte on offer (the server is stopped by back-pressure soon after).
    expect(sent).toBeLessThan(64 * 1024 * 1024);
    expect(healthzBytesMax).toBeLessThanOrEqual(64 * 1024);
  });

  it('is null for malformed JSON or no server, never a throw', async () => {
    const base = await serve((_q, s) => s.end('{"pids": '));
    expect(await fetchHostPids(base, 2000)).toBeNull();
    expect(await fetchHostPids('http://127.0.0.1:9', 500)).toBeNull();
  });
});
