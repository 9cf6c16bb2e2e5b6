/**
 * Requests and responses over a SecureSession, many in flight per connection.
 *
 *   request  { i: id, o: op, ...args }
 *   response { i: id, ok: true, ...result } | { i: id, ok: false, c: code, m: message, n?: version, t?: absentAt }
 *   (n: a CONFLICT's current version of the key; t: for a CONFLICT on a key without a value, its delete's version)
 *
 * The caller side matches responses by id, bounds the number in flight and
 * times each one out; a response whose id is unknown ends the session (the
 * peer is confused or hostile).
 *
 * One-way requests (`notify`) carry a negative id: the server handles them and sends nothing back, and only
 * for the ops it allows one-way (anything else ends the session). An older server answers them anyway; the
 * caller drops an answer with a negative id unread.
 */
import { isRecord } from './cbor.ts';
import { frameBytesMax, inflightMax } from './constants.ts';
import { EkvError, isEkvErrorCode } from './errors.ts';
import type { SecureSession } from './session.ts';

export type RpcResult = Record<string, unknown>;

interface Pending {
  resolve: (r: RpcResult) => void;
  reject: (e: EkvError) => void;
  op: string;
  deadline: number;
}

// The resolving functions of the promise being made: one executor for every call instead of a closure per call
// (a Promise runs its executor synchronously, so `call` takes them right after `new Promise`).
let madeResolve: ((r: RpcResult) => void) | null = null;
let madeReject: ((e: EkvError) => void) | null = null;
function takeResolvers(resolve: (r: RpcResult) => void, reject: (e: EkvError) => void): void {
  madeResolve = resolve;
  madeReject = reject;
}

/** How often pending requests are checked against their deadlines (one timer per connection, not per request). */
export const timeoutSweepMs = 50;

export class RpcClient {
  private readonly session: SecureSession;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private nextOneWayId = -1;
  private closedWith: EkvError | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  onClose: ((err: EkvError) => void) | null = null;

  constructor(session: SecureSession) {
    this.session = session;
    session.start(
      (msg) => this.receive(msg),
      (err) => this.shutdown(err),
    );
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  get inflight(): number {
    return this.pending.size;
  }

  call(op: string, args: Record<string, unknown>, timeoutMs: number): Promise<RpcResult> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (this.pending.size >= inflightMax) return Promise.reject(new EkvError('UNAVAILABLE', 'too many requests in flight on this connection'));
    const id = this.nextId++;
    const promise = new Promise<RpcResult>(takeResolvers);
    const resolve = madeResolve as (r: RpcResult) => void;
    const reject = madeReject as (e: EkvError) => void;
    madeResolve = null;
    madeReject = null;
    this.pending.set(id, { resolve, reject, op, deadline: Date.now() + timeoutMs });
    this.sweeper ??= setInterval(() => this.sweep(), timeoutSweepMs).unref();
    try {
      this.session.send({ ...args, i: id, o: op });
    } catch (err) {
      reject(err as EkvError); // what a throw in a Promise executor did
    }
    return promise;
  }

  /**
   * A one-way request: sent now, never answered, nothing kept for it. False when the session is closed. Who uses
   * it keeps its own liveness check (a call now and then): no timeout covers a one-way request.
   */
  notify(op: string, args: Record<string, unknown>): boolean {
    if (this.closedWith) return false;
    const id = this.nextOneWayId;
    this.nextOneWayId = id === -Number.MAX_SAFE_INTEGER ? -1 : id - 1;
    this.session.send({ ...args, i: id, o: op });
    return true;
  }

  /**
   * Requests past their deadline fail with TIMEOUT. A silent session is not trusted to recover (a relay
   * may have stretched a length prefix and stalled it): it is closed, so later requests open a fresh,
   * re-attested connection.
   */
  private sweep(): void {
    const now = Date.now();
    let expired = false;
    for (const [id, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(id);
      p.reject(new EkvError('TIMEOUT', `${p.op}: no answer in time`));
      expired = true;
    }
    if (this.pending.size === 0 && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
    if (expired) this.session.close(new EkvError('TIMEOUT', 'a request timed out; session closed'));
  }

  close(): void {
    this.session.close();
    this.shutdown(new EkvError('CLOSED', 'connection closed by the client'));
  }

  private receive(msg: unknown): void {
    if (!isRecord(msg) || typeof msg.i !== 'number') {
      this.session.close(new EkvError('PROTOCOL', 'response without an id'));
      return;
    }
    if (msg.i < 0) return; // an older server's answer to a one-way request
    const p = this.pending.get(msg.i);
    if (!p) {
      this.session.close(new EkvError('PROTOCOL', `response to unknown request ${msg.i}`));
      return;
    }
    this.pending.delete(msg.i);
    if (msg.ok === true) p.resolve(msg);
    else {
      const code = isEkvErrorCode(msg.c) ? msg.c : 'INTERNAL';
      const version = typeof msg.n === 'number' && Number.isSafeInteger(msg.n) && msg.n >= 0 ? { version: msg.n } : {};
      const absentAt = typeof msg.t === 'number' && Number.isSafeInteger(msg.t) && msg.t >= 0 ? { absentAt: msg.t } : {};
      p.reject(new EkvError(code, typeof msg.m === 'string' ? msg.m.slice(0, 500) : code, { ...version, ...absentAt }));
    }
  }

  private shutdown(err: EkvError): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    this.onClose?.(err);
  }
}

/**
 * Server side: dispatch each request to `handle`, answer in completion order. A one-way request (negative id)
 * is handled and not answered, success or failure, and only for an op `oneWay` allows; any other one-way
 * request ends the session (PROTOCOL).
 */
export function serveRpc(
  session: SecureSession,
  handle: (op: string, req: Record<string, unknown>) => Promise<RpcResult> | RpcResult,
  onClose: (err: EkvError) => void,
  opts: { oneWay?: (op: string) => boolean; answerBytesMax?: number } = {},
): void {
  let inflight = 0;
  // Review-16 F1: with a bound on what the session may queue for the other side, a request is taken only while
  // every answer in flight (each at most one frame) and those queued fit in it; the rest wait unread (the socket
  // is held), so a client that reads its answers is never closed for asking much at once, and one that does not
  // read holds at most the bound. Without a bound, requests are taken as they come (peers).
  const budget = opts.answerBytesMax;
  const waiting: unknown[] = [];
  let held = false;
  let retry: NodeJS.Timeout | NodeJS.Immediate | null = null;
  let fallbackMs = 10;
  let drainArmed = false;
  // The node-wide bound (protocol/answer-memory.ts): a request taken reserves a frame there too; one that does not
  // fit waits like one over the session's budget, and the node makes room by closing its largest stalled holder.
  const meter = session.meter;
  let pressed = false;
  const wake = (): void => {
    pressed = false;
    pump();
  };
  const fits = (): boolean => {
    if (budget === undefined) return true;
    if ((inflight + 1) * frameBytesMax + session.queuedBytes > budget) return false;
    if (meter === null || meter.tryReserve()) return true;
    if (!pressed) {
      pressed = true;
      meter.pool.pressed(wake, meter);
    } else meter.pool.relieve(); // rate-limited inside
    return false;
  };
  const pump = (): void => {
    if (session.closed) {
      waiting.length = 0;
      return;
    }
    let took = false;
    while (waiting.length > 0 && fits()) {
      take(waiting.shift());
      fallbackMs = 10;
      took = true;
    }
    if (took && held && waiting.length > 0) meter?.progress(); // review-19 F1, F2: taking a request is progress
    if (waiting.length === 0 && held) {
      held = false;
      meter?.unhold(); // progress: it leaves the node's held set (a later hold enters at its end)
      session.hold(false); // may deliver frames held meanwhile (each goes through onMessage again)
    }
    if (waiting.length > 0 && retry === null) {
      if (session.unsent > 0) {
        // Answers not yet sealed count as a frame each: look again once they left (the session flushes first).
        retry = setImmediate(() => {
          retry = null;
          pump();
        });
        return;
      }
      // Settling answers and the drain pump too; the timer only makes sure nothing waits on an event that never comes.
      // It backs off (10 ms to 1 s) while nothing is taken: thousands of sessions held by clients that never read
      // must not cost the enclave a wake-up each every 10 ms.
      if (!drainArmed) {
        drainArmed = true;
        session.whenDrained(() => {
          drainArmed = false;
          pump();
        });
      }
      retry = setTimeout(() => {
        retry = null;
        pump();
      }, fallbackMs);
      fallbackMs = Math.min(1000, fallbackMs * 2);
      retry.unref?.();
    }
  };
  const settled = (): void => {
    inflight--;
    if (waiting.length > 0) queueMicrotask(pump);
  };
  const settledOneWay = (): void => {
    meter?.unreserve(1); // nothing will be sent for it
    settled();
  };
  const onMessage = (msg: unknown): void => {
    if (budget !== undefined && (waiting.length > 0 || !fits())) {
      waiting.push(msg);
      if (!held) {
        held = true;
        session.hold(true);
        // Held sessions are bounded node-wide (docs/architecture.md "held client sessions"): this may close the
        // session held longest without progress, or, if every held one made progress lately, this one.
        if (meter !== null && !meter.hold()) {
          waiting.length = 0;
          return;
        }
      }
      if (waiting.length === 1) pump();
      return;
    }
    take(msg);
  };
  const take = (msg: unknown): void => {
      if (!isRecord(msg) || typeof msg.i !== 'number' || typeof msg.o !== 'string') {
        session.close(new EkvError('PROTOCOL', 'malformed request'));
        return;
      }
      const id = msg.i;
      if (id < 0 && !(opts.oneWay?.(msg.o) ?? false)) {
        session.close(new EkvError('PROTOCOL', `one-way request for ${msg.o.slice(0, 40)}`));
        return;
      }
      // (fits() reserved this request's answer in the node-wide count when there is one.)
      if (++inflight > inflightMax) {
        session.close(new EkvError('PROTOCOL', 'too many requests in flight'));
        return;
      }
      if (id < 0) {
        const settle = settledOneWay;
        try {
          const r = handle(msg.o, msg);
          if (r instanceof Promise) r.then(settle, settle);
          else settle();
        } catch {
          settle();
        }
        return;
      }
      const answer = (r: RpcResult) => {
        session.send({ ...r, i: id, ok: true });
        settled();
      };
      const refuse = (err: unknown) => {
        const e = err instanceof EkvError ? err : new EkvError('INTERNAL', 'internal error');
        session.send({ i: id, ok: false, c: e.code, m: e.message, ...(e.version === undefined ? {} : { n: e.version }), ...(e.absentAt === undefined ? {} : { t: e.absentAt }) });
        settled();
      };
      try {
        const r = handle(msg.o, msg);
        if (r instanceof Promise) r.then(answer, refuse);
        else answer(r);
      } catch (err) {
        refuse(err);
      }
  };
  session.start(onMessage, (err) => {
    waiting.length = 0;
    if (retry !== null) {
      clearTimeout(retry as NodeJS.Timeout);
      clearImmediate(retry as NodeJS.Immediate);
    }
    retry = null;
    onClose(err);
  });
}
