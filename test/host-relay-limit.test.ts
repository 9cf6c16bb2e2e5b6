// The host's per-address cap on inbound connections (host/relay.ts): the one place that sees remote
// addresses holds each to a share, so one source cannot use up the enclave's connections.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInboundRelay } from '../host/relay.ts';

const counters = { onConnection: () => undefined, onBytes: () => undefined, onClose: () => undefined };
let dir: string;
let enclave: net.Server;
let relay: net.Server;
let port: number;
const open: net.Socket[] = [];

/** Connects and says 'x'; resolves true if the echo comes back, false if the relay closed the connection. */
function echoes(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    open.push(s);
    s.on('error', () => resolve(false));
    s.on('close', () => resolve(false));
    s.on('data', () => resolve(true));
    s.write('x');
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ekv-relay-'));
  enclave = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => enclave.listen(join(dir, 'enclave.sock'), r));
  relay = await startInboundRelay({
    host: '127.0.0.1', port: 0, enclaveSocket: join(dir, 'enclave.sock'), counters, logger: pino({ level: 'silent' }),
    perAddressMax: 2, limitLoopback: true,
  });
  port = (relay.address() as net.AddressInfo).port;
});

afterAll(async () => {
  for (const s of open) s.destroy();
  await new Promise((r) => relay?.close(r));
  await new Promise((r) => enclave?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('inbound relay', () => {
  it('refuses connections from one address beyond perAddressMax, and admits again once one closes', async () => {
    expect(await echoes()).toBe(true);
    expect(await echoes()).toBe(true);
    expect(await echoes()).toBe(false);
    open[0]!.destroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(await echoes()).toBe(true);
  });
});
