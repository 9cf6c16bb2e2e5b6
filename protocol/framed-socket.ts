/**
 * A stream socket carrying length-prefixed frames, with two ways to read: an
 * awaitable `next()` for the handshake, then a callback per frame for the
 * session. Writes made in one turn of the event loop go out as one batch.
 *
 * Frames are decoded only when a reader takes them, each against the limit in
 * force at that moment: the handshake reads its frames under the small
 * handshake limit, raises the limit, and only then is the client's first
 * request (which may have arrived in the same chunk as its finish) judged, by
 * the data limit. Bytes nobody reads yet stay undecoded and the socket stops
 * reading, so an unauthenticated peer cannot make us buffer much.
 */
import type { Duplex } from 'node:stream';
import { EkvError } from './errors.ts';
import { encodeFrame, FrameDecoder } from './frame.ts';
import type { AnswerMeter } from './answer-memory.ts';

type Waiter = { resolve: (f: Buffer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout };

export class FramedSocket {
  readonly socket: Duplex;
  private readonly decoder: FrameDecoder;
  private waiter: Waiter | null = null;
  private onFrame: ((frame: Buffer) => void) | null = null;
  private onClose: ((err: EkvError) => void) | null = null;
  private closedWith: EkvError | null = null;
  private outbox: Buffer[] = [];
  private outboxBytes = 0;
  private flushScheduled = false;
  /** 0: no bound. Else the most bytes this side keeps queued for a reader that does not read (limitWriteBuffer). */
  private writeBytesMax = 0;
  private readPausedForWrites = false;
  /** Frames are kept buffered, not delivered, and the socket does not read (hold(); review-16 F1). */
  private held = false;
  private drainWaiters: Array<() => void> = [];
  /** The node-wide answer memory's share of this connection (meter()); null: not counted (peers, clients). */
  private answerMeter: AnswerMeter | null = null;
  /** Bytes of each batch handed to the socket and not yet written out, oldest first (metered only). */
  private readonly writing: number[] = [];
  /** Of outboxBytes, those counted by the meter (frames queued before it was set are not). */
  private meteredOutboxBytes = 0;
  private readonly onWritten = (): void => {
    const n = this.writing.shift();
    if (n !== undefined) this.answerMeter?.written(n);
  };

  constructor(socket: Duplex, maxFrameBytes: number) {
    this.socket = socket;
    this.decoder = new FrameDecoder(maxFrameBytes);
    socket.on('data', (chunk: Buffer) => this.ingest(chunk));
    socket.on('error', (err) => this.fail(new EkvError('CLOSED', `connection error: ${err.message}`)));
    socket.on('close', () => this.fail(new EkvError('CLOSED', 'connection closed')));
    socket.on('end', () => this.fail(new EkvError('CLOSED', 'connection closed by peer')));
  }

  setMaxFrameBytes(max: number): void {
    this.decoder.setMax(max);
  }

  /** The next frame, for the handshake. Rejects on close, on an oversized frame, or after `timeoutMs`. */
  next(timeoutMs: number): Promise<Buffer> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (this.waiter) throw new Error('FramedSocket.next: one reader at a time');
    const buffered = this.takeFrame();
    if (buffered) return Promise.resolve(buffered);
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new EkvError('TIMEOUT', `no frame within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
      this.socket.resume();
    });
  }

  /** Switch to callback mode: every queued and future frame goes to `onFrame`. */
  listen(onFrame: (frame: Buffer) => void, onClose: (err: EkvError) => void): void {
    this.onFrame = onFrame;
    this.onClose = onClose;
    // Frames that arrived before the session existed are delivered even if the peer has since closed.
    for (let f = this.takeFrame(); f !== null; f = this.takeFrame()) onFrame(f);
    this.socket.resume();
    if (this.closedWith) onClose(this.closedWith);
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  /**
   * Bound what this side buffers for a reader that does not read (review-14 F1: the enclave's answers to a client
   * that never reads them would otherwise pile up in the enclave's memory). Past a quarter of `max` queued, the
   * socket stops reading (no new requests, so no new answers) until its buffer drains; past `max`, the connection
   * is closed. Only the accepting side sets it: the SDK and the enclave's own peer calls read continuously.
   */
  limitWriteBuffer(max: number): void {
    this.writeBytesMax = max;
  }

  /**
   * Count what this side queues for the reader in a node-wide AnswerMemory (docs/architecture.md "Work before
   * authentication"): each frame when queued, until its write completes; all of it is returned when the connection
   * ends. Set before any frame is written.
   */
  meter(m: AnswerMeter): void {
    this.answerMeter = m;
    if (this.closedWith) m.close();
  }

  get meterOf(): AnswerMeter | null {
    return this.answerMeter;
  }

  /** Bytes written and not yet taken by the reader (queued here and in the socket). */
  get queuedBytes(): number {
    return this.socket.writableLength + this.outboxBytes;
  }

  /**
   * Stop (true) or restart (false) delivering frames (review-16 F1): while held, frames stay buffered and the socket
   * reads nothing more, so the caller takes no request it could not answer within its bound.
   */
  hold(on: boolean): void {
    if (this.held === on) return;
    this.held = on;
    if (on) {
      this.socket.pause();
      return;
    }
    while (!this.held && !this.closedWith && this.onFrame) {
      const f = this.takeFrame();
      if (f === null) break;
      this.onFrame(f);
    }
    if (!this.held && !this.readPausedForWrites && !this.closedWith) this.socket.resume();
  }

  /** Call `cb` once the socket's write buffer drained (or the connection closed). */
  whenDrained(cb: () => void): void {
    if (this.closedWith || this.socket.writableLength === 0 && this.outboxBytes === 0) {
      queueMicrotask(cb);
      return;
    }
    this.drainWaiters.push(cb);
    if (this.drainWaiters.length === 1) {
      const fire = () => {
        this.socket.off('drain', fire);
        const ws = this.drainWaiters;
        this.drainWaiters = [];
        for (const w of ws) w();
      };
      this.socket.on('drain', fire);
    }
  }

  /** Queue one frame; frames written in the same tick are flushed together. */
  write(body: Uint8Array): void {
    if (this.closedWith) return;
    if (this.writeBytesMax > 0 && this.socket.writableLength + this.outboxBytes + body.length > this.writeBytesMax) {
      this.destroy(new EkvError('UNAVAILABLE', `the other side does not read: more than ${this.writeBytesMax} bytes queued for it`, { reason: 'SLOW_READER' }));
      return;
    }
    this.outbox.push(encodeFrame(body));
    this.outboxBytes += body.length + 4;
    if (this.answerMeter !== null) {
      this.answerMeter.queued(body.length + 4);
      this.meteredOutboxBytes += body.length + 4;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(() => this.flush());
    }
  }

  /** Write now and half-close (used for a final error or an attestation answer). */
  end(body?: Uint8Array): void {
    if (body) this.outbox.push(encodeFrame(body));
    this.flush();
    this.socket.end();
  }

  destroy(err?: EkvError): void {
    this.fail(err ?? new EkvError('CLOSED', 'connection closed locally'));
    this.socket.destroy();
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || this.socket.destroyed) return;
    const batch = this.outbox.length === 1 ? (this.outbox[0] as Buffer) : Buffer.concat(this.outbox);
    this.outbox = [];
    const counted = this.meteredOutboxBytes;
    this.outboxBytes = 0;
    this.meteredOutboxBytes = 0;
    if (this.answerMeter === null) this.socket.write(batch);
    else {
      this.writing.push(counted);
      this.socket.write(batch, this.onWritten);
    }
    if (this.writeBytesMax > 0 && !this.readPausedForWrites && this.socket.writableLength > this.writeBytesMax / 4) {
      // Stop taking requests until the reader catches up ('drain' follows: write() returned false).
      this.readPausedForWrites = true;
      this.socket.pause();
      this.socket.once('drain', () => {
        this.readPausedForWrites = false;
        if (!this.closedWith && !this.held && (this.onFrame || this.waiter)) this.socket.resume();
      });
    }
  }

  private ingest(chunk: Buffer): void {
    if (this.closedWith) return;
    this.decoder.append(chunk);
    while (!this.closedWith && !this.held && (this.onFrame || this.waiter)) {
      const f = this.takeFrame();
      if (f === null) break;
      if (this.onFrame) this.onFrame(f);
      else if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        clearTimeout(w.timer);
        w.resolve(f);
      }
    }
    // Back-pressure: while the handshake works (NSM call, verification) nobody reads, so stop
    // reading from the socket; next() and listen() resume it.
    if ((this.held || (!this.onFrame && !this.waiter)) && this.decoder.pendingBytes > 0) this.socket.pause();
  }

  /** The next buffered frame under the current limit, or null; an oversized one ends the connection. */
  private takeFrame(): Buffer | null {
    try {
      return this.decoder.nextFrame();
    } catch (err) {
      this.fail(err instanceof EkvError ? err : new EkvError('PROTOCOL', String(err)));
      this.socket.destroy();
      return null;
    }
  }

  private fail(err: EkvError): void {
    if (this.closedWith) return;
    this.closedWith = err;
    this.answerMeter?.close();
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of ws) queueMicrotask(w);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.onClose?.(err);
  }
}
