/**
 * Connections from this enclave to its peers. Each goes out through the host's
 * outbound relay (`EKV-CONNECT host:port`), then runs the attested handshake in
 * 'peer' mode: both enclaves verify each other's document (same root, PCRs
 * equal to ours or allowlisted) and prove the same ring secret (a MAC over the
 * transcript, docs/membership.md) before any ring message or replica crosses.
 * The hello itself already carries a MAC under the ring secret (connectHandshake adds it when `ring` is
 * set), so the accepting node admits it to its peer-reserved handshake slots before any NSM work.
 * When the caller knows which node it wants (a ring id), the attested identity
 * key must hash to that id, so a host that routes us elsewhere is caught.
 */
import net from 'node:net';
import type { Logger } from 'pino';
import { handshakeBytesMax } from '../../protocol/constants.ts';
import { EkvError } from '../../protocol/errors.ts';
import { FramedSocket } from '../../protocol/framed-socket.ts';
import { connectHandshake, type Attest, type RingOption, type VerifyDoc } from '../../protocol/handshake.ts';
import type { Identity } from '../../protocol/keys.ts';
import { RpcClient, type RpcResult } from '../../protocol/rpc.ts';
import { nodeIdFromPublicKey } from '../ring/index.ts';

export const peerConnectTimeoutMs = 5000;
export const peerConnectionsMax = 256;

interface PeerConn {
  rpc: RpcClient;
  id: bigint;
  socket: net.Socket;
}

export class PeerPool {
  private readonly conns = new Map<string, Promise<PeerConn>>();
  /** Called when `addr` answers with an identity other than the ring member we expected there. */
  onWrongIdentity: ((addr: string, expected: bigint) => void) | null = null;

  constructor(
    private readonly c: {
      outboundSocket: string;
      identity: Identity;
      attest: Attest;
      verifyPeer: VerifyDoc;
      /** This node's ring: every peer must prove the same ring secret in the handshake. */
      ring: RingOption;
      logger: Logger;
    },
  ) {}

  /** Call `op` on the peer at `addr`; `expectId` pins which node must answer. */
  async call(addr: string, op: string, args: Record<string, unknown>, timeoutMs: number, expectId?: bigint): Promise<RpcResult> {
    const conn = await this.get(addr);
    if (expectId !== undefined && conn.id !== expectId) {
      // The address now answers with another attested identity: the node we meant is gone.
      this.onWrongIdentity?.(addr, expectId);
      throw new EkvError('UNAVAILABLE', `the node at ${addr} is not the expected ring member`);
    }
    return conn.rpc.call(op, args, timeoutMs);
  }

  /**
   * A one-way request (RpcClient.notify) to the peer at `addr`, pinned to `expectId` like `call`, on an open
   * connection only: false when there is none (nothing is queued for a connection still opening: the caller
   * sends a call instead, which it counts until answered). Never answered; the caller's own calls detect a dead link.
   */
  notify(addr: string, op: string, args: Record<string, unknown>, expectId: bigint): boolean {
    const open = this.ready.get(addr);
    if (open === undefined) return false;
    if (open.id !== expectId) {
      this.onWrongIdentity?.(addr, expectId);
      return false;
    }
    return open.rpc.notify(op, args);
  }

  /** Bytes written to the connection to `addr` that its socket has not handed to the OS yet (0: none, or no connection). */
  queuedBytes(addr: string): number {
    return this.ready.get(addr)?.socket.writableLength ?? 0;
  }

  /** The same, summed over every open connection. */
  queuedBytesTotal(): number {
    let n = 0;
    for (const c of this.ready.values()) n += c.socket.writableLength;
    return n;
  }

  /** Open connections, by address (for `notify` without a promise turn, and their sockets' unsent bytes). */
  private readonly ready = new Map<string, PeerConn>();

  /** The ring id of the attested node at `addr` (connecting if needed). */
  async identify(addr: string): Promise<bigint> {
    return (await this.get(addr)).id;
  }

  drop(addr: string): void {
    const p = this.conns.get(addr);
    this.conns.delete(addr);
    this.ready.delete(addr);
    p?.then((c) => c.rpc.close(), () => undefined);
  }

  closeAll(): void {
    for (const addr of [...this.conns.keys()]) this.drop(addr);
  }

  private get(addr: string): Promise<PeerConn> {
    const existing = this.conns.get(addr);
    if (existing) return existing;
    if (this.conns.size >= peerConnectionsMax) {
      const oldest = this.conns.keys().next().value as string;
      this.drop(oldest);
    }
    const p = this.open(addr);
    this.conns.set(addr, p);
    p.then(
      (c) => {
        if (this.conns.get(addr) !== p) return; // dropped while it was being opened
        if (c.rpc.closed) {
          this.conns.delete(addr); // closed before anyone listened: the next call opens a fresh one
          return;
        }
        this.ready.set(addr, c);
        c.rpc.onClose = () => {
          if (this.conns.get(addr) === p) this.conns.delete(addr);
          if (this.ready.get(addr) === c) this.ready.delete(addr);
        };
      },
      () => {
        if (this.conns.get(addr) === p) this.conns.delete(addr);
      },
    );
    return p;
  }

  private async open(addr: string): Promise<PeerConn> {
    const socket = await dialRelay(this.c.outboundSocket, addr);
    const fs = new FramedSocket(socket, handshakeBytesMax);
    try {
      const r = await connectHandshake(fs, {
        mode: 'peer',
        verifyServer: this.c.verifyPeer,
        self: { identity: this.c.identity, attest: this.c.attest, ring: this.c.ring },
        timeoutMs: peerConnectTimeoutMs,
      });
      return { rpc: new RpcClient(r.session), id: nodeIdFromPublicKey(r.serverKey), socket };
    } catch (err) {
      socket.destroy();
      throw err instanceof EkvError ? err : new EkvError('UNAVAILABLE', String(err));
    }
  }
}

function dialRelay(outboundSocket: string, addr: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(outboundSocket);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new EkvError('UNAVAILABLE', `relay to ${addr} timed out`));
    }, peerConnectTimeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.write(`EKV-CONNECT ${addr}\n`);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(new EkvError('UNAVAILABLE', `outbound relay unavailable: ${err.message}`));
    });
  });
}
