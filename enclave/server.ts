/**
 * The enclave's listener: every inbound connection (a client, a peer enclave,
 * the host asking for a document) arrives on one unix socket that the host
 * bridges to vsock. Each gets the attested handshake, then an RPC session whose
 * requests go to the handler for its kind of caller.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { encodeCbor } from '../protocol/cbor.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { acceptHandshake, type AcceptOptions, type AttestedPeer } from '../protocol/handshake.ts';
import { serveRpc, type RpcResult } from '../protocol/rpc.ts';
import { sessionLifetimeMs } from '../protocol/constants.ts';

/** Connections the enclave serves at once (clients, peers, the host's attestation fetches). */
export const connectionsMax = 8192;

export interface CallerContext {
  /** Set when the caller is an attested peer enclave. */
  peer: (AttestedPeer & { key: Buffer }) | null;
  /** Set when the caller proved a principal key. */
  principal: Buffer | null;
}

export type Handler = (op: string, req: Record<string, unknown>, ctx: CallerContext) => Promise<RpcResult> | RpcResult;

export interface ServerStats {
  connections: number;
  handshakesFailed: number;
  sessionsTampered: number;
}

export class EnclaveServer {
  readonly stats: ServerStats = { connections: 0, handshakesFailed: 0, sessionsTampered: 0 };
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly accept: AcceptOptions,
    private readonly handler: Handler,
    private readonly logger: Logger,
  ) {
    this.server = net.createServer((s) => this.onConnection(s));
    // Bounded: each connection may hold a handshake's buffer until its timeout.
    this.server.maxConnections = connectionsMax;
  }

  listen(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private onConnection(socket: net.Socket): void {
    this.stats.connections++;
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.setNoDelay?.(true);
    const fs = new FramedSocket(socket, handshakeBytesMax);
    this.handshake(fs).catch((err: unknown) => {
      this.stats.handshakesFailed++;
      const e = err instanceof EkvError ? err : new EkvError('INTERNAL', 'handshake failed');
      if (!(err instanceof EkvError)) this.logger.error({ err }, 'handshake error');
      else this.logger.debug({ code: e.code, msg: e.message }, 'handshake refused');
      if (!fs.closed) fs.end(encodeCbor({ t: 'error', code: e.code, message: e.message }));
      setTimeout(() => socket.destroy(), 1000).unref();
    });
  }

  private async handshake(fs: FramedSocket): Promise<void> {
    const accepted = await acceptHandshake(fs, this.accept);
    if (accepted.kind === 'attest') return;
    const { session, peer, principal } = accepted;
    const ctx: CallerContext = { peer, principal };
    // Sessions are bounded in time: the client handshakes again and sees a fresh document.
    const lifetime = setTimeout(() => session.close(new EkvError('CLOSED', 'session lifetime reached')), sessionLifetimeMs);
    lifetime.unref();
    serveRpc(
      session,
      (op, req) => this.handler(op, req, ctx),
      (err) => {
        clearTimeout(lifetime);
        if (err.code === 'TAMPERED' || err.code === 'PROTOCOL' || err.code === 'FRAME_TOO_LARGE') {
          this.stats.sessionsTampered++;
          this.logger.warn({ code: err.code, msg: err.message }, 'session ended');
        }
      },
    );
  }
}
