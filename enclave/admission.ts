/**
 * Admission of unauthenticated work (issue 10, item 6; docs/architecture.md "Work before
 * authentication"). Every hello costs an NSM attestation and a signature before the caller has proved
 * anything, and behind the host relay every connection comes from the host: the enclave cannot tell
 * one remote address from another. What it can see is the connection and the mode the hello claims.
 * So the limits are:
 *
 * - connections that have sent no hello yet: at most awaitingHelloMax; a new one pushes out the
 *   oldest (an idle-connection flood cannot keep new connections out, and a genuine caller sends its
 *   hello in its first round trip);
 * - handshakes between hello and session, by claimed mode: anonymousHandshakesMax for 'client' and
 *   'attest' hellos, peerHandshakesMax reserved for 'peer' hellos that prove the ring secret (a MAC over
 *   their nonce, ephemeral key and send time, checked in protocol/handshake.ts before this) and are fresh:
 *   sent within peerHelloWindowMs of this enclave's clock and with a nonce not seen before (a bounded cache,
 *   peerHelloNoncesMax), so neither a flood of hellos that only claim 'peer' nor the host's replays of
 *   captured genuine peer hellos can take a peer's slot. A peer hello without a proof (a node with no ring,
 *   --no-seal) is counted in the anonymous share. A handshake holds its slot through its NSM attestation (never
 *   interrupted) and then while it waits for the caller's finish; when a class is full, the oldest
 *   handshake of that class that has waited finishGraceMs or more for its finish is closed to make
 *   room (a caller that does not finish holds a slot for about a second, not for the 10 s handshake
 *   timeout, while a genuine caller has a full round trip and more to answer); if there is none, the
 *   hello is refused at once with UNAVAILABLE/BUSY, before any NSM work;
 * - so at most handshakeAttestationsMax attestations for inbound handshakes are ever queued at the
 *   NSM, below nsmPendingMax: the enclave's own attestations (its outbound peer handshakes, KMS
 *   Recipient documents) always find room;
 * - client sessions (authenticated channel, anonymous or with a principal): at most clientSessionsMax,
 *   so that connections in their hello and peer sessions always have room within connectionsMax; when the
 *   table is full, a new client hello closes the session that has been idle longest (no request for at least
 *   sessionIdleEvictMs; review-14 F4), else it is refused BUSY. Without this, sessions opened once and left
 *   silent kept every new client out for their whole lifetime (an hour) at no further cost; now holding the
 *   table costs a request per session every sessionIdleEvictMs, a flood like any other. A genuine client whose
 *   idle session gave way gets CLOSED on its next call and handshakes again;
 * - per connection: one handshake, then at most inflightMax requests in flight (protocol/rpc.ts);
 * - answers queued for client sessions, or reserved for their requests being worked on: at most
 *   clientWriteBufferBytesMax / 2 per session and clientAnswerBytesTotalMax over all of them (protocol/answer-memory.ts;
 *   under that bound's pressure the largest stalled holder is closed);
 * - client sessions held (not read, their client possibly still sending into the kernel's buffers): at most
 *   heldSessionsMax at once; when full, the one held longest without progress gives way if held 2 s, else the new
 *   hold is refused (its session closed BUSY).
 *
 * Pure bookkeeping: no sockets or timers here; the server passes a `close` callback per connection.
 */
import { totalmem } from 'node:os';
import { frameBytesMax } from '../protocol/constants.ts';
import { EkvError } from '../protocol/errors.ts';
import type { HelloMode, PeerHelloProof } from '../protocol/handshake.ts';
import { nsmPendingMax } from './nsm.ts';

/**
 * What one connection costs inside the enclave outside node's own counts (docs/architecture.md "Connections and
 * the in-enclave socat"): the socat child forked per vsock connection (measured on Debian 12, socat 1.7.4.4:
 * ~200-250 KiB of memory per idle connection, private pages, page tables, kernel stack, socket structures),
 * rounded up to 256 KiB, plus the enclave kernel's vsock receive buffer, 256 KiB.
 */
export const connectionBytes = 512 * 1024;
/**
 * Connections the enclave keeps at once (clients, peers, the host's attestation fetches): a quarter of the enclave's
 * memory over connectionBytes, within [512, 8192]: 1,536 for the default 3 GiB enclave, 512 at 1 GiB. The same
 * formula sets the in-enclave socat's max-children (infra/enclave/entrypoint.sh: this + connectionsMargin), so node's
 * admission, not socat's listen backlog, decides who gets in; test/connection-bound.test.ts checks that they agree.
 */
export const connectionsMax = connectionsFor(totalmem());
/** socat's max-children on vsock :5000 is connectionsMax + this (connections node has closed and socat not yet reaped). */
export const connectionsMargin = 64;

/** For an enclave of `memoryBytes` (os.totalmem(), /proc/meminfo MemTotal): a quarter of it over connectionBytes, within [512, 8192]. */
export function connectionsFor(memoryBytes: number): number {
  return Math.min(8192, Math.max(512, Math.floor(memoryBytes / 4 / connectionBytes)));
}
/** Connections that have sent no hello yet: a quarter of connectionsMax, at most 1,024 (128 at 1 GiB, 384 at 3 GiB). */
export const awaitingHelloMax = awaitingHelloFor(connectionsMax);
export function awaitingHelloFor(connections: number): number {
  return Math.min(1024, Math.floor(connections / 4));
}
/** Connections kept for peers (and their handshakes) out of connectionsMax: never given to client sessions. */
export const peerConnectionsReserve = 256;
export const anonymousHandshakesMax = 32;
export const peerHandshakesMax = 16;
/**
 * A proven peer hello is fresh if sent within this many ms of this enclave's clock (either way: clocks of
 * two enclaves differ a little). Older ones are refused, so the nonce cache only needs this window.
 */
export const peerHelloWindowMs = 60_000;
/**
 * Nonces of proven peer hellos seen within the window. Only a hello with a valid MAC (made by a ring member)
 * enters it, so the host cannot fill it with junk; its own replays are either in it or out of the window.
 * 4096 is far more genuine peer hellos than a ring makes in a minute (16 peer slots, one handshake per peer
 * connection); if it is ever full of live nonces, new peer hellos are refused BUSY rather than a nonce
 * dropped (which would reopen its replay). Memory: 4096 x (64-char key + number) ~ a few hundred KiB.
 */
export const peerHelloNoncesMax = 4096;
/** A handshake waiting this long for the caller's finish may be closed to admit a newer hello. */
export const finishGraceMs = 1000;
export const handshakeAttestationsMax = anonymousHandshakesMax + peerHandshakesMax;
/**
 * Answers the enclave keeps queued for one client session that does not read them (review-14 F1): past a quarter
 * of this it stops reading the session's requests until they drain, past it the session is closed. About 128
 * answers of the largest frame: a client that reads its answers reaches it only by asking for more than this
 * at once (its requests in flight then fail CLOSED and the SDK opens a new session).
 */
export const clientWriteBufferBytesMax = 64 * 1024 * 1024;
/**
 * The node-wide bound on answer memory over every client session (protocol/answer-memory.ts; docs/architecture.md
 * "Work before authentication"): queued answers plus a frame reserved per request being worked on. A sixth of the
 * enclave's memory (the default enclave, infra/lib/config.ts enclaveMemoryMib, has 3 GiB and no swap), at most
 * 512 MiB (room for 16 sessions at their whole budget) and at least one session's whole budget. Nothing a client
 * sends raises it; the host sizes the enclave (`nitro-cli run-enclave --memory`), so a smaller enclave only makes
 * the node refuse sooner, a denial the host can cause anyway.
 */
export const clientAnswerBytesTotalMax = answerBoundFor(totalmem());

/** The bound for an enclave of `memoryBytes`: a sixth, within [clientWriteBufferBytesMax, 512 MiB]. */
export function answerBoundFor(memoryBytes: number): number {
  return Math.min(512 * 1024 * 1024, Math.max(clientWriteBufferBytesMax, Math.floor(memoryBytes / 6)));
}
/**
 * What one held client session (its reading paused: protocol/rpc.ts serveRpc) may keep outside the answer count while
 * its client goes on sending (docs/architecture.md "held client sessions"): 512 KiB of kernel buffers (on Nitro the
 * in-enclave socat's vsock receive buffer, 256 KiB, and the unix socket from socat to node, at most socat's send
 * buffer, ~208 KiB) and userland: at most a partial frame and the chunk that completed the frame held back in the
 * FramedSocket decoder, the net.Socket's readable buffer (its high-water mark, 16 KiB on Node 20 and 64 KiB on 22, and one
 * 64 KiB read), the rest of one frame's batch waiting in serveRpc (decoded from at most a frame): two frames and 256 KiB.
 */
export const heldSessionBytes = 512 * 1024 + 2 * frameBytesMax + 256 * 1024;
/** Client sessions held at once (protocol/answer-memory.ts `hold`): ~290 for the default 3 GiB enclave. */
export const heldSessionsMax = heldSessionsFor(totalmem());

/** For an enclave of `memoryBytes`: a sixth of it (at most 512 MiB) over heldSessionBytes, at least 16. */
export function heldSessionsFor(memoryBytes: number): number {
  return Math.max(16, Math.floor(Math.min(512 * 1024 * 1024, Math.floor(memoryBytes / 6)) / heldSessionBytes));
}
/** Client sessions; the rest of connectionsMax stays for connections in their hello and for peers (128 at 1 GiB, 896 at 3 GiB). */
export const clientSessionsMax = clientSessionsFor(connectionsMax);
export function clientSessionsFor(connections: number): number {
  return connections - awaitingHelloFor(connections) - peerConnectionsReserve;
}
/** A client session idle (no request) this long gives way to a new client when the session table is full. */
export const sessionIdleEvictMs = 30_000;
/** A session's activity is recorded at most this often (it moves to the end of the idle order then). */
const activityGrainMs = 1000;

// The connection bound at its smallest (512) still leaves room for hellos, peers and client sessions, and at least as
// many client sessions as may be held (a held session is a client session).
if (clientSessionsFor(connectionsFor(0)) < 64) throw new Error('connectionsMax at its minimum leaves too few client sessions');
if (clientSessionsMax < 64) throw new Error('connectionsMax leaves too little room for client sessions');
if (heldSessionsMax > clientSessionsMax) throw new Error('heldSessionsMax must not exceed clientSessionsMax');
if (clientAnswerBytesTotalMax < clientWriteBufferBytesMax) throw new Error('clientAnswerBytesTotalMax must hold a few sessions at their whole answer budget');
if (clientWriteBufferBytesMax < 8 * frameBytesMax) throw new Error('clientWriteBufferBytesMax must hold several answers of the largest frame');
// The enclave's own attestations need room at the NSM whatever inbound handshakes do.
if (handshakeAttestationsMax > nsmPendingMax - 8) throw new Error('handshake admission leaves the NSM no room for the enclave itself');

export type AdmissionClass = 'anonymous' | 'peer';

export interface AdmissionLimits {
  awaitingHelloMax: number;
  anonymousHandshakesMax: number;
  peerHandshakesMax: number;
  clientSessionsMax: number;
}

export const defaultAdmissionLimits: AdmissionLimits = { awaitingHelloMax, anonymousHandshakesMax, peerHandshakesMax, clientSessionsMax };

/** One admitted handshake. The server calls attested() after its document went out, release() when it ends. */
export interface HandshakeTicket {
  attested(): void;
  release(): void;
}

interface Slot {
  close: () => void;
  /** When this side's document went out (monotonic ms); null while it is still being attested. */
  attestedAt: number | null;
}

export interface AdmissionStats {
  awaitingHello: number;
  clientSessions: number;
  handshakes: Record<AdmissionClass, number>;
  refusedBusy: Record<AdmissionClass, number>;
  evicted: Record<AdmissionClass | 'awaitingHello' | 'idleSession', number>;
}

export class HandshakeAdmission {
  readonly #limits: AdmissionLimits;
  /** How to close each connection the server told us about. */
  readonly #closers = new Map<object, () => void>();
  /** Insertion order is age order: the first entry is the oldest. */
  readonly #awaitingHello = new Set<object>();
  readonly #slots: Record<AdmissionClass, Map<object, Slot>> = { anonymous: new Map(), peer: new Map() };
  /** Client sessions -> when each last made a request (monotonic ms); iteration order is idle order (oldest first). */
  readonly #clientSessions = new Map<object, number>();
  /** Hellos admitted on the promise of an idle session giving way (F3b): newcomer -> idle session, and back. */
  readonly #promised = new Map<object, object>();
  readonly #promisedTo = new Map<object, object>();
  readonly #refused = { anonymous: 0, peer: 0 };
  readonly #evicted = { anonymous: 0, peer: 0, awaitingHello: 0, idleSession: 0 };
  readonly #idleEvictMs: number;

  readonly #now: () => number;
  readonly #graceMs: number;
  /** Wall clock (ms since the epoch), for the peer hello's send time. */
  readonly #wallNow: () => number;
  /** Proven peer hello nonces (hex) -> when they leave the window (wall ms). */
  readonly #peerNonces = new Map<string, number>();
  readonly #refusedReplay = { count: 0 };

  constructor(limits: AdmissionLimits = defaultAdmissionLimits, init: { now?: () => number; wallNow?: () => number; finishGraceMs?: number; sessionIdleEvictMs?: number } = {}) {
    for (const [k, v] of Object.entries(limits)) if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${k} must be a positive integer`);
    this.#limits = limits;
    this.#now = init.now ?? (() => performance.now());
    this.#graceMs = init.finishGraceMs ?? finishGraceMs;
    this.#wallNow = init.wallNow ?? (() => Date.now());
    this.#idleEvictMs = init.sessionIdleEvictMs ?? sessionIdleEvictMs;
  }

  /** Only a peer hello that proved the ring secret counts as a peer's; any other hello is anonymous. */
  static classOf(mode: HelloMode, proof: PeerHelloProof | null): AdmissionClass {
    return mode === 'peer' && proof !== null ? 'peer' : 'anonymous';
  }

  /** Peer hellos refused as replayed or stale. */
  get refusedPeerReplays(): number {
    return this.#refusedReplay.count;
  }

  /** A proven peer hello: refuse it unless fresh (in the window, nonce never seen), and remember its nonce. */
  #checkFresh(proof: PeerHelloProof): void {
    const now = this.#wallNow();
    if (Math.abs(now - proof.sentAtMs) > peerHelloWindowMs) {
      this.#refusedReplay.count++;
      throw new EkvError('UNAVAILABLE', 'a peer hello outside the time window (replayed, or a clock far off)', { reason: 'STALE_HELLO' });
    }
    const key = proof.nonce.toString('hex');
    if (this.#peerNonces.has(key)) {
      this.#refusedReplay.count++;
      throw new EkvError('UNAVAILABLE', 'a replayed peer hello', { reason: 'REPLAYED_HELLO' });
    }
    if (this.#peerNonces.size >= peerHelloNoncesMax) for (const [k, until] of this.#peerNonces) if (until < now) this.#peerNonces.delete(k);
    if (this.#peerNonces.size >= peerHelloNoncesMax) {
      this.#refused.peer++;
      throw new EkvError('UNAVAILABLE', 'busy: too many peer hellos in the window', { reason: 'BUSY' });
    }
    this.#peerNonces.set(key, proof.sentAtMs + peerHelloWindowMs);
  }

  get stats(): AdmissionStats {
    return {
      awaitingHello: this.#awaitingHello.size,
      clientSessions: this.#clientSessions.size,
      handshakes: { anonymous: this.#slots.anonymous.size, peer: this.#slots.peer.size },
      refusedBusy: { ...this.#refused },
      evicted: { ...this.#evicted },
    };
  }

  /** A new connection, before its hello. `close` ends it (the oldest is closed when too many wait). */
  connected(conn: object, close: () => void): void {
    if (this.#awaitingHello.size >= this.#limits.awaitingHelloMax) {
      const oldest = this.#awaitingHello.values().next().value as object;
      this.#awaitingHello.delete(oldest);
      this.#evicted.awaitingHello++;
      this.#closers.get(oldest)?.();
    }
    this.#closers.set(conn, close);
    this.#awaitingHello.add(conn);
  }

  /** The connection ended (whatever its state). */
  disconnected(conn: object): void {
    this.#unpromise(conn);
    const newcomer = this.#promisedTo.get(conn);
    if (newcomer !== undefined) this.#unpromise(newcomer);
    this.#closers.delete(conn);
    this.#awaitingHello.delete(conn);
    this.#clientSessions.delete(conn);
    this.#slots.anonymous.delete(conn);
    this.#slots.peer.delete(conn);
  }

  /**
   * The hello arrived, claiming `mode` (with `proof` if it is a peer hello that proved the ring secret): a
   * ticket, or UNAVAILABLE (BUSY, or a replayed/stale peer hello) before any work is done.
   */
  admit(conn: object, mode: HelloMode, proof: PeerHelloProof | null = null): HandshakeTicket {
    this.#awaitingHello.delete(conn);
    const cls = HandshakeAdmission.classOf(mode, proof);
    if (cls === 'peer' && proof) this.#checkFresh(proof);
    const slots = this.#slots[cls];
    const max = cls === 'peer' ? this.#limits.peerHandshakesMax : this.#limits.anonymousHandshakesMax;
    // Review-16 F3: only whether an idle session could give way; it is closed when the newcomer's session exists
    // (established), so a hello refused below, or one that never completes, closes nobody's session.
    // The idle session found is promised to this hello (F3b): another hello in flight needs another one, so the
    // table does not grow past its bound by every hello admitted while one idle session remained.
    const full = mode === 'client' && this.#clientSessions.size >= this.#limits.clientSessionsMax;
    const idle = full ? this.#idleSession() : null;
    if (full && idle === null) {
      this.#refused[cls]++;
      throw new EkvError('UNAVAILABLE', `busy: ${this.#clientSessions.size} client sessions`, { reason: 'BUSY' });
    }
    if (slots.size >= max && !this.#evictOldestWaiting(cls)) {
      this.#refused[cls]++;
      throw new EkvError('UNAVAILABLE', `busy: ${slots.size} ${cls} handshakes in progress`, { reason: 'BUSY' });
    }
    if (idle !== null) {
      this.#promised.set(conn, idle);
      this.#promisedTo.set(idle, conn);
    }
    const slot: Slot = { close: this.#closers.get(conn) ?? (() => undefined), attestedAt: null };
    slots.set(conn, slot);
    return {
      attested: () => {
        if (slots.get(conn) === slot) slot.attestedAt = this.#now();
      },
      release: () => {
        if (slots.get(conn) === slot) slots.delete(conn);
      },
    };
  }

  /** The handshake became a session (client mode counts against clientSessionsMax). */
  established(conn: object, mode: HelloMode): void {
    if (mode !== 'client') return;
    // The table is full (it was when the hello came, or filled since): the session idle longest gives way if it
    // has been idle long enough (review-14 F4). If none has any more, this one is let in above the bound: at most
    // the anonymous handshakes in progress, as for hellos admitted together.
    const promised = this.#promised.get(conn);
    this.#unpromise(conn);
    if (this.#clientSessions.size >= this.#limits.clientSessionsMax) {
      // The promised session, unless it made a request meanwhile (then another idle one, if any).
      const last = promised === undefined ? undefined : this.#clientSessions.get(promised);
      if (promised !== undefined && last !== undefined && this.#now() - last >= this.#idleEvictMs) this.#evict(promised);
      else this.#evictIdleSession();
    }
    this.#clientSessions.set(conn, this.#now());
  }

  /** A hello's promise of an idle session (F3b) ends: it got its session, or it is gone. */
  #unpromise(newcomer: object): void {
    const idle = this.#promised.get(newcomer);
    if (idle === undefined) return;
    this.#promised.delete(newcomer);
    this.#promisedTo.delete(idle);
  }

  #evict(conn: object): void {
    this.#clientSessions.delete(conn);
    this.#evicted.idleSession++;
    this.#closers.get(conn)?.();
  }

  /** The session idle longest if it has been idle sessionIdleEvictMs or more, else null. */
  #idleSession(): object | null {
    for (const [conn, last] of this.#clientSessions) {
      if (this.#now() - last < this.#idleEvictMs) return null; // idle order: every later one is busier
      if (!this.#promisedTo.has(conn)) return conn;
    }
    return null;
  }

  /** A client session made a request: it is not idle (recorded at most every activityGrainMs, so cheap per request). */
  active(conn: object): void {
    const last = this.#clientSessions.get(conn);
    if (last === undefined) return;
    const now = this.#now();
    if (now - last < activityGrainMs) return;
    this.#clientSessions.delete(conn);
    this.#clientSessions.set(conn, now);
  }

  /** Close the client session idle longest if it has been idle sessionIdleEvictMs or more (review-14 F4). */
  #evictIdleSession(): boolean {
    const conn = this.#idleSession(); // idle order: the first is the one idle longest
    if (conn === null) return false;
    this.#evict(conn);
    return true;
  }

  /**
   * Room for one more connection within `max`: true if there is room, or after closing the oldest
   * connection still waiting for its hello; false if every connection is further along (refuse the new one).
   */
  roomForConnection(open: number, max: number): boolean {
    if (open < max) return true;
    const oldest = this.#awaitingHello.values().next().value as object | undefined;
    if (oldest === undefined) return false;
    this.#awaitingHello.delete(oldest);
    this.#evicted.awaitingHello++;
    this.#closers.get(oldest)?.();
    return true;
  }

  #evictOldestWaiting(cls: AdmissionClass): boolean {
    const slots = this.#slots[cls];
    const before = this.#now() - this.#graceMs;
    for (const [conn, slot] of slots) {
      if (slot.attestedAt === null || slot.attestedAt > before) continue;
      slots.delete(conn);
      this.#evicted[cls]++;
      slot.close();
      return true;
    }
    return false;
  }
}
