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
import { acceptHandshake, type AcceptOptions, type AttestedPeer, type HelloMode, type PeerHelloProof } from '../protocol/handshake.ts';
import { serveRpc, type RpcResult } from '../protocol/rpc.ts';
import type { SecureSession } from '../protocol/session.ts';
import { sessionLifetimeMs } from '../protocol/constants.ts';
import { AnswerMemory } from '../protocol/answer-memory.ts';
import { clientAnswerBytesTotalMax, clientWriteBufferBytesMax, connectionsMax, heldSessionsMax, HandshakeAdmission, type HandshakeTicket } from './admission.ts';
import { m as metrics } from './metrics.ts';
import { NsmError } from './nsm.ts';
import { closeWith, listenOn } from './unix-listener.ts';


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

export interface ServerInit {
  /** Limits on unauthenticated work (default: enclave/admission.ts's). */
  admission?: HandshakeAdmission;
  /** The metrics snapshot for the host's 'metrics' hello (none: refused). */
  metricsSnapshot?: () => unknown;
  /** An operation's label in the request metrics: a known name, or 'other' (never a caller's string as given). */
  opLabel?: (op: string) => string;
  /**
   * The node-wide answer memory bound and its stall time (default: clientAnswerBytesTotalMax, answerStallMs), the held
   * sessions' bound and grace (default: heldSessionsMax, the stall time); tests.
   */
  answerMemory?: { bytesMax?: number; stallMs?: number; holdsMax?: number; holdGraceMs?: number };
}

export class EnclaveServer {
  readonly stats: ServerStats = { connections: 0, handshakesFailed: 0, sessionsTampered: 0 };
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** Inbound peer sessions, each with the ring id current when its handshake began (null: no ring). */
  private readonly peerSessions = new Map<SecureSession, Buffer | null>();
  readonly admission: HandshakeAdmission;
  private readonly init: ServerInit;
  /** Answer memory over every client session (docs/architecture.md "Work before authentication"). */
  readonly answerMemory: AnswerMemory;

  constructor(
    private readonly accept: AcceptOptions,
    private readonly handler: Handler,
    private readonly logger: Logger,
    init: ServerInit = {},
  ) {
    this.admission = init.admission ?? new HandshakeAdmission();
    this.init = init;
    this.answerMemory = new AnswerMemory({
      bytesMax: init.answerMemory?.bytesMax ?? clientAnswerBytesTotalMax,
      ...(init.answerMemory?.stallMs === undefined ? {} : { stallMs: init.answerMemory.stallMs }),
      holdsMax: init.answerMemory?.holdsMax ?? heldSessionsMax,
      ...(init.answerMemory?.holdGraceMs === undefined ? {} : { holdGraceMs: init.answerMemory.holdGraceMs }),
      onHoldClose: (m) => {
        if (m.stale) metrics.sessionsSlowReader.inc();
        else metrics.sessionsHoldRefused.inc();
        this.logger.warn({ stale: m.stale, heldMs: m.heldMs, holding: m.holding }, m.stale
          ? 'client session closed: too many sessions held, it was held longest without reading'
          : 'client session closed: too many sessions held, all of them made progress lately (busy)');
      },
      onEvict: (m) => {
        metrics.sessionsSlowReader.inc();
        this.logger.warn({ held: m.charged, unread: m.unread, stalledMs: m.stalledMs, usedBytes: this.answerMemory.used }, 'client session closed: node answer memory full, it held the most unread answers');
      },
    });
    this.server = net.createServer((s) => this.onConnection(s));
    // Connections are bounded in onConnection (connectionsMax), not by maxConnections: a new
    // connection may push out the oldest one still waiting for its hello, so a flood of idle
    // connections cannot keep a peer (or anyone) out.
  }

  listen(path: string): Promise<void> {
    return listenOn(this.server, path);
  }

  close(): Promise<void> {
    return closeWith(this.server, this.sockets);
  }

  /**
   * Close every inbound peer session whose handshake began under another ring id than the current one. A recovery
   * open changes the shared ring credential in place (enclave/recovery/gate.ts) and the id is checked only at
   * handshakes, so a peer met at the old id would otherwise keep talking to the reopened node.
   */
  closeStalePeerSessions(): number {
    let n = 0;
    for (const [session, id] of this.peerSessions) {
      if (this.currentRing(id)) continue;
      this.peerSessions.delete(session);
      session.close(new EkvError('CLOSED', 'the ring was reopened under a new id'));
      n++;
    }
    return n;
  }

  private currentRing(id: Buffer | null): boolean {
    const ring = this.accept.ring;
    return ring === null ? id === null : id !== null && id.equals(ring.id);
  }

  /** A full NSM queue is load, not a fault: the caller is refused UNAVAILABLE ("busy") and may retry. */
  private readonly attest: AcceptOptions['attest'] = (nonce, publicKey) =>
    this.accept.attest(nonce, publicKey).catch((err: unknown) => {
      if (err instanceof NsmError && err.code === 'BUSY') throw new EkvError('UNAVAILABLE', 'busy: the NSM queue is full', { reason: 'BUSY' });
      throw err;
    });

  private onConnection(socket: net.Socket): void {
    if (!this.admission.roomForConnection(this.sockets.size, connectionsMax)) {
      socket.destroy();
      return;
    }
    this.stats.connections++;
    this.sockets.add(socket);
    this.admission.connected(socket, () => socket.destroy());
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.admission.disconnected(socket);
    });
    socket.setNoDelay?.(true);
    const fs = new FramedSocket(socket, handshakeBytesMax);
    let ticket: HandshakeTicket | null = null;
    let mode: HelloMode | null = null;
    const admit = (m: HelloMode, proof: PeerHelloProof | null) => {
      mode = m;
      return (ticket = this.admission.admit(socket, m, proof));
    };
    const released = () => (ticket as HandshakeTicket | null)?.release();
    this.handshake(fs, admit, socket).then(() => {
      released();
      metrics.handshakes.inc({ mode: mode ?? 'none', result: 'ok' });
      if (mode !== null && !socket.destroyed) this.admission.established(socket, mode);
    }, (err: unknown) => {
      released();
      this.stats.handshakesFailed++;
      const e = err instanceof EkvError ? err : new EkvError('INTERNAL', 'handshake failed');
      metrics.handshakes.inc({ mode: mode ?? 'none', result: e.code });
      if (!(err instanceof EkvError)) this.logger.error({ err }, 'handshake error');
      else this.logger.debug({ code: e.code, msg: e.message }, 'handshake refused');
      if (!fs.closed) fs.end(encodeCbor({ t: 'error', code: e.code, message: e.message }));
      // A refusal for load lingers briefly: under a flood, refused sockets must not pile up.
      setTimeout(() => socket.destroy(), e.reason === 'BUSY' ? 100 : 1000).unref();
    });
  }

  private async handshake(fs: FramedSocket, admit: AcceptOptions['admit'], conn: object): Promise<void> {
    const snapshot = this.init.metricsSnapshot;
    const ringAtStart = this.accept.ring ? Buffer.from(this.accept.ring.id) : null;
    const accepted = await acceptHandshake(fs, { ...this.accept, admit, attest: this.attest, ...(snapshot ? { metrics: snapshot } : {}) });
    if (accepted.kind !== 'session') return;
    const { session, peer, principal } = accepted;
    if (peer !== null) {
      // A peer handshake that straddled a recovery open was made at the old ring id: closed like the sessions before it.
      if (!this.currentRing(ringAtStart)) {
        session.close(new EkvError('CLOSED', 'the ring was reopened under a new id'));
        return;
      }
      this.peerSessions.set(session, ringAtStart);
    }
    // A client that sends requests and never reads the answers must not fill the enclave's memory (review-14 F1).
    if (peer === null) {
      fs.limitWriteBuffer(clientWriteBufferBytesMax);
      // ...nor many such clients together: the node-wide answer memory (docs/architecture.md).
      fs.meter(this.answerMemory.open((err) => session.close(err)));
    }
    const ctx: CallerContext = { peer, principal };
    // Sessions are bounded in time: the client handshakes again and sees a fresh document.
    const lifetime = setTimeout(() => session.close(new EkvError('CLOSED', 'session lifetime reached')), sessionLifetimeMs);
    lifetime.unref();
    serveRpc(
      session,
      (op, req) => {
        if (peer === null) this.admission.active(conn); // not idle: keeps its place when the session table is full
        return this.timed(op, req, ctx);
      },
      (err) => {
        clearTimeout(lifetime);
        this.peerSessions.delete(session);
        if (err.code === 'TAMPERED' || err.code === 'PROTOCOL' || err.code === 'FRAME_TOO_LARGE') {
          this.stats.sessionsTampered++;
          metrics.sessionsTampered.inc();
          this.logger.warn({ code: err.code, msg: err.message }, 'session ended');
        }
      },
      // Only an attested peer's data batches may be one-way (docs/consistency.md "Transport").
      // A client session takes a request only while its answers in flight and queued fit in half the write bound
      // (review-16 F1): one that reads is never closed for asking much at once, one that does not is held.
      { oneWay: (op) => peer !== null && peer !== undefined && op === 'dm', ...(peer === null ? { answerBytesMax: clientWriteBufferBytesMax / 2 } : {}) },
    );
  }

  /** The dispatch, counted by operation, caller kind and result code, and timed (docs/observability.md). */
  private timed(op: string, req: Record<string, unknown>, ctx: CallerContext): Promise<RpcResult> | RpcResult {
    const label = this.init.opLabel ? this.init.opLabel(op) : 'other';
    const caller = ctx.peer ? 'peer' : 'client';
    const start = process.hrtime.bigint();
    const done = (code: string) => {
      metrics.requests.inc({ op: label, caller, code });
      metrics.requestSeconds.observe(Number(process.hrtime.bigint() - start) / 1e9, { op: label });
    };
    const failed = (err: unknown): never => {
      done(err instanceof EkvError ? err.code : 'INTERNAL');
      throw err;
    };
    let r: Promise<RpcResult> | RpcResult;
    try {
      r = this.handler(op, req, ctx);
    } catch (err) {
      return failed(err);
    }
    if (r instanceof Promise) {
      return r.then((v) => {
        done('ok');
        return v;
      }, failed);
    }
    done('ok');
    return r;
  }
}
