/**
 * The host's own channel into the enclave (enclave-5001.sock; vsock port 5001 on Nitro, bridged on the
 * parent to a unix socket that only the host proxy opens). It answers two things: the 'metrics' hello, the
 * enclave's metrics snapshot for the host's Prometheus /metrics (docs/observability.md), and 'decommission':
 * the node leaves for good and retires (docs/consistency.md, "Retirement"; the host could stop it for good
 * anyway, retiring lets it say so to its peers).
 *
 * Why a socket of its own: enclave-5000.sock is what the host's client port and the ring port relay to, so
 * a metrics hello there would come from anyone on the network, and the snapshot moves with other principals'
 * writes (review-4 A1). The main listener no longer offers the mode; this one offers nothing else. The host
 * is not trusted (it relays every byte and stores every sealed blob, so it learns these figures anyway);
 * the point is that strangers behind its ports do not.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { handshakeBytesMax } from '../protocol/constants.ts';
import { encodeCbor } from '../protocol/cbor.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { acceptHostChannelHello } from '../protocol/handshake.ts';
import { m as metrics } from './metrics.ts';
import { closeWith, listenOn } from './unix-listener.ts';

/** Connections open at once on the host channel (the host fetches one snapshot per scrape). */
export const hostChannelConnectionsMax = 16;
/** A caller that has not sent its hello by then is closed. */
export const hostChannelHelloTimeoutMs = 5_000;

export class HostChannel {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  /** One decommission at a time: a second request waits for the same outcome. */
  private decommissioning: Promise<unknown> | null = null;

  constructor(
    private readonly snapshot: () => unknown,
    private readonly logger: Logger,
    private readonly decommission?: (waitMs: number | undefined) => Promise<unknown>,
  ) {
    this.server = net.createServer((s) => this.onConnection(s));
  }

  listen(path: string): Promise<void> {
    return listenOn(this.server, path);
  }

  close(): Promise<void> {
    return closeWith(this.server, this.sockets);
  }

  private onConnection(socket: net.Socket): void {
    if (this.sockets.size >= hostChannelConnectionsMax) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    const fs = new FramedSocket(socket, handshakeBytesMax);
    const decommission = this.decommission;
    const answers = decommission
      ? { metrics: this.snapshot, decommission: (waitMs: number | undefined) => (this.decommissioning ??= decommission(waitMs)) }
      : { metrics: this.snapshot };
    // (A decommission's answer waits for the leave: no hello timeout on it once the hello arrived.)
    acceptHostChannelHello(fs, answers, hostChannelHelloTimeoutMs).then((mode) => {
      metrics.handshakes.inc({ mode, result: 'ok' });
    }, (err: unknown) => {
      const e = err instanceof EkvError ? err : new EkvError('INTERNAL', 'metrics hello failed');
      metrics.handshakes.inc({ mode: 'metrics', result: e.code });
      if (!(err instanceof EkvError)) this.logger.error({ err }, 'host channel error');
      if (!fs.closed) fs.end(encodeCbor({ t: 'error', code: e.code, message: e.message }));
      setTimeout(() => socket.destroy(), 1000).unref();
    });
  }
}
