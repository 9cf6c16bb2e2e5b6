/**
 * The host's byte relays. The host is untrusted and never decrypts: it joins
 * two sockets and counts bytes. Inbound: a TCP connection from a client or a
 * peer host is joined to the enclave's listening unix socket. Outbound: the
 * enclave connects to the host's relay socket, names a destination in one
 * plaintext line (`EKV-CONNECT <host>:<port>\n`), and is joined to it — the
 * destination only ever sees the enclave's end-to-end encrypted bytes.
 */
import net from 'node:net';
import type { Logger } from 'pino';

export const connectLineBytesMax = 300;
const connectTimeoutMs = 5000;

export interface RelayCounters {
  onConnection(direction: 'inbound' | 'outbound'): void;
  onBytes(direction: 'inbound' | 'outbound', n: number): void;
  onClose(direction: 'inbound' | 'outbound'): void;
}

/** Join two sockets both ways; either side closing or failing closes the other. */
export function join(a: net.Socket, b: net.Socket, onClose: () => void, onBytes?: (n: number) => void): void {
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    a.destroy();
    b.destroy();
    onClose();
  };
  a.on('error', close).on('close', close);
  b.on('error', close).on('close', close);
  if (onBytes) {
    a.on('data', (d: Buffer) => onBytes(d.length));
    b.on('data', (d: Buffer) => onBytes(d.length));
  }
  a.pipe(b);
  b.pipe(a);
}

export function startInboundRelay(opts: {
  host: string;
  port: number;
  enclaveSocket: string;
  counters: RelayCounters;
  logger: Logger;
}): Promise<net.Server> {
  const server = net.createServer({ noDelay: true }, (client) => {
    opts.counters.onConnection('inbound');
    const enclave = net.connect(opts.enclaveSocket);
    join(client, enclave, () => opts.counters.onClose('inbound'), (n) => opts.counters.onBytes('inbound', n));
  });
  return listen(server, { host: opts.host, port: opts.port });
}

export type OutboundPolicy = (host: string, port: number) => boolean;

/** Parse `EKV-CONNECT host:port` (IPv4, IPv6 in brackets, or a DNS name). */
export function parseConnectLine(line: string): { host: string; port: number } | null {
  const m = /^EKV-CONNECT (\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$/.exec(line);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  const host = (m[1] as string).replace(/^\[|\]$/g, '');
  return { host, port };
}

export function startOutboundRelay(opts: {
  socketPath: string;
  policy: OutboundPolicy;
  counters: RelayCounters;
  logger: Logger;
}): Promise<net.Server> {
  const server = net.createServer((enclave) => {
    let head = Buffer.alloc(0);
    const timer = setTimeout(() => enclave.destroy(), connectTimeoutMs);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl < 0) {
        if (head.length > connectLineBytesMax) enclave.destroy();
        return;
      }
      enclave.off('data', onData);
      clearTimeout(timer);
      const target = parseConnectLine(head.subarray(0, nl).toString('latin1'));
      if (!target || !opts.policy(target.host, target.port)) {
        opts.logger.warn({ line: head.subarray(0, Math.min(nl, 100)).toString('latin1') }, 'outbound connection refused');
        enclave.destroy();
        return;
      }
      opts.counters.onConnection('outbound');
      const upstream = net.connect({ host: target.host, port: target.port, noDelay: true });
      const rest = head.subarray(nl + 1);
      if (rest.length > 0) upstream.write(rest);
      join(enclave, upstream, () => opts.counters.onClose('outbound'), (n) => opts.counters.onBytes('outbound', n));
    };
    enclave.on('data', onData);
    enclave.on('error', () => enclave.destroy());
  });
  return listen(server, opts.socketPath);
}

function listen(server: net.Server, where: string | { host: string; port: number }): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve(server);
    };
    if (typeof where === 'string') server.listen(where, done);
    else server.listen(where.port, where.host, done);
  });
}
