/**
 * A client's connection to one node: TCP to the node's host, the attested
 * handshake (the node is refused with UNATTESTED unless its document passes
 * the trust policy), then RPCs. The connection handshakes again, with a fresh
 * document, before the node's signing certificate or the session expires, and
 * after any failure.
 */
import net from 'node:net';
import { handshakeBytesMax, sessionLifetimeMs } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import { FramedSocket } from '../protocol/framed-socket.ts';
import { connectHandshake, handshakeTimeoutMs, ringChecks, type AttestedPeer, type PrincipalSigner, type VerifyDoc } from '../protocol/handshake.ts';
import { RpcClient, type RpcResult } from '../protocol/rpc.ts';

export const connectTimeoutMs = 5000;
/**
 * A node under load refuses hellos beyond its share before doing any work (enclave/admission.ts: an
 * unauthenticated UNAVAILABLE refusal); the client tries again this many times, after a short random
 * pause, before it reports UNAVAILABLE.
 */
export const busyRetriesMax = 5;
const busyPauseMs = 50;
/** Handshake again this long before the document's certificate or the session would expire. */
export const renewMarginMs = 60 * 1000;

export interface NodeAddress {
  host: string;
  port: number;
}

export function parseAddress(addr: string): NodeAddress {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(addr);
  if (!m) throw new EkvError('BAD_REQUEST', `not a host:port address: ${addr.slice(0, 100)}`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

interface Live {
  rpc: RpcClient;
  server: AttestedPeer;
  serverKey: Buffer;
  ring: Buffer | null;
  previousRings: Buffer[];
  generation: number;
  /** `lineage`'s answer for this session, made once (it is read on every answer the floor checks). */
  lineage: { readonly generation: number; readonly previous: readonly Buffer[] };
  renewAt: number;
}

const noLineage: { readonly generation: number; readonly previous: readonly Buffer[] } = Object.freeze({ generation: 0, previous: Object.freeze([]) });

/**
 * The ring a client without a pinned ring id holds its nodes to (review-17 F1): the ring of the first node it
 * verified (or the one its floor file learnt before), 'none' for a ring-less node. Every later node must be of it,
 * exactly as with a pin: a node of another ring (a wiped node that founded anew, the image in another deployment)
 * is refused WRONG_RING, a reopened ring naming it RING_RECOVERED. Without this, the floor (per ring id) never
 * compared another ring's answers with what the client had seen, so an empty ring's NOT_FOUND was returned as data.
 */
export interface LearntRing {
  id: string | null;
  learn(id: string): void;
}

export class NodeConnection {
  readonly addr: string;
  private live: Live | null = null;
  private connecting: Promise<Live> | null = null;

  constructor(
    addr: string,
    private readonly verify: VerifyDoc,
    /** `ringId` (hex): the deployment's ring; a node of another ring is refused with WRONG_RING. */
    private readonly opts: { principal?: PrincipalSigner; timeoutMs: number; now?: () => number; ringId?: string; learntRing?: LearntRing },
  ) {
    this.addr = addr;
  }

  /** The node's attested identity key, once connected. */
  get identityKey(): Buffer | null {
    return this.live?.serverKey ?? null;
  }

  get attested(): AttestedPeer | null {
    return this.live?.server ?? null;
  }

  /** The node's ring id as its attested key signed it (null: a node without a ring), once connected. */
  get ringId(): Buffer | null {
    return this.live?.ring ?? null;
  }

  /**
   * The node's ring lineage as its attested key signed it: the ids its ring had before a recovery reopened it
   * (newest first) and its generation (0 and none: never reopened). docs/recovery.md.
   */
  get lineage(): { generation: number; previous: readonly Buffer[] } {
    return this.live?.lineage ?? noLineage;
  }

  call(op: string, args: Record<string, unknown>): Promise<RpcResult> {
    // A live session (every call but the first and those after a renewal): straight to it, no extra promise.
    const l = this.live;
    if (l && !l.rpc.closed && (this.opts.now ?? Date.now)() < l.renewAt) return l.rpc.call(op, args, this.opts.timeoutMs);
    return this.ensure().then((live) => live.rpc.call(op, args, this.opts.timeoutMs));
  }

  async ensure(): Promise<Live> {
    const now = (this.opts.now ?? Date.now)();
    if (this.live && !this.live.rpc.closed && now < this.live.renewAt) return this.live;
    if (this.live) {
      this.live.rpc.close();
      this.live = null;
    }
    this.connecting ??= this.open().finally(() => (this.connecting = null));
    this.live = await this.connecting;
    return this.live;
  }

  close(): void {
    this.live?.rpc.close();
    this.live = null;
  }

  private async open(): Promise<Live> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.openOnce();
      } catch (err) {
        const refusedForLoad = err instanceof EkvError && err.code === 'UNAVAILABLE' && err.reason === 'UNAVAILABLE';
        if (!refusedForLoad || attempt >= busyRetriesMax) throw err;
        await new Promise((r) => setTimeout(r, busyPauseMs * (attempt + 1) * (0.5 + Math.random())));
      }
    }
  }

  private async openOnce(): Promise<Live> {
    const { host, port } = parseAddress(this.addr);
    const socket = await dial(host, port);
    const fs = new FramedSocket(socket, handshakeBytesMax);
    try {
      const r = await connectHandshake(fs, {
        mode: 'client',
        timeoutMs: Math.min(this.opts.timeoutMs, handshakeTimeoutMs),
        verifyServer: this.verify,
        ...(this.opts.ringId ? { expectRing: Buffer.from(this.opts.ringId, 'hex') } : {}),
        ...(this.opts.principal ? { principal: this.opts.principal } : {}),
      });
      if (!this.opts.ringId && this.opts.learntRing && ringChecks.connect) holdToRing(this.opts.learntRing, r.ring, r.previousRings);
      const now = (this.opts.now ?? Date.now)();
      const renewAt = Math.min(r.server.leafNotAfter, now + sessionLifetimeMs) - renewMarginMs;
      const lineage = { generation: r.generation, previous: r.previousRings };
      return { rpc: new RpcClient(r.session), server: r.server, serverKey: r.serverKey, ring: r.ring, previousRings: r.previousRings, generation: r.generation, lineage, renewAt };
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }
}

function holdToRing(pin: LearntRing, ring: Buffer | null, previous: readonly Buffer[]): void {
  const got = ring === null ? 'none' : ring.toString('hex');
  if (pin.id === null) {
    pin.learn(got);
    return;
  }
  if (pin.id === got) return;
  const short = (x: string): string => x.slice(0, 16);
  if (previous.some((p) => p.toString('hex') === pin.id)) {
    throw new EkvError('RING_RECOVERED', `ring ${short(pin.id)} (the ring this client met first) was stopped and reopened by its recovery members as ring ${got}: check \`ekv recovery status\`, then pin the new ring id`);
  }
  throw new EkvError('WRONG_RING', `the node belongs to ring ${short(got)}, not ${short(pin.id)} (the ring this client met first; pin trust.ringId to choose another)`);
}

function dial(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new EkvError('UNAVAILABLE', `connect to ${host}:${port} timed out`));
    }, connectTimeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(new EkvError('UNAVAILABLE', `cannot connect to ${host}:${port}: ${err.message}`));
    });
  });
}
