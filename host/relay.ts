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
/**
 * Inbound connections open at once from one remote address. Only the host sees addresses (every
 * connection reaches the enclave from the host), so this is where a single source is held to a share;
 * the enclave's own limits (enclave/admission.ts) hold whatever the host lets through. Not a trust
 * decision: a host that drops connections only costs availability, which it controls anyway.
 * Loopback is exempt: a local ring runs every node and client on 127.0.0.1.
 */
export const connectionsPerAddressMax = 256;
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
  /** Default connectionsPerAddressMax. */
  perAddressMax?: number;
  /** Limit loopback addresses too (default false: a local ring shares 127.0.0.1). */
  limitLoopback?: boolean;
}): Promise<net.Server> {
  const perAddressMax = opts.perAddressMax ?? connectionsPerAddressMax;
  const open = new Map<string, number>();
  const server = net.createServer({ noDelay: true }, (client) => {
    const addr = client.remoteAddress ?? '';
    const limited = opts.limitLoopback === true || !isLoopback(addr);
    const count = open.get(addr) ?? 0;
    if (limited && count >= perAddressMax) {
      client.destroy();
      return;
    }
    if (limited) open.set(addr, count + 1);
    opts.counters.onConnection('inbound');
    const enclave = net.connect(opts.enclaveSocket);
    join(client, enclave, () => {
      if (limited) {
        const left = (open.get(addr) ?? 1) - 1;
        if (left > 0) open.set(addr, left);
        else open.delete(addr);
      }
      opts.counters.onClose('inbound');
    }, (n) => opts.counters.onBytes('inbound', n));
  });
  return listen(server, { host: opts.host, port: opts.port });
}

function isLoopback(addr: string): boolean {
  return addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.');
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

/**
 * Listens on a unix socket path or a TCP address. A fixed TCP port that is busy (EADDRINUSE) is tried again every
 * 250 ms for up to `busyRetryMs`: a node restarted on its recorded port can find it briefly taken as the local
 * port of some other process's outgoing connection, which goes away.
 */
export function listen<S extends net.Server>(server: S, where: string | { host: string; port: number }, busyRetryMs = 15_000): Promise<S> {
  const deadline = Date.now() + busyRetryMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const onError = (err: NodeJS.ErrnoException): void => {
        server.off('listening', done);
        const retry = typeof where !== 'string' && where.port !== 0 && err.code === 'EADDRINUSE' && Date.now() < deadline;
        if (retry) setTimeout(attempt, 250);
        else reject(err);
      };
      const done = (): void => {
        server.off('error', onError);
        resolve(server);
      };
      server.once('error', onError);
      server.once('listening', done);
      if (typeof where === 'string') server.listen(where);
      else server.listen(where.port, where.host);
    };
    attempt();
  });
}
