/**
 * An established channel: CBOR messages sealed with AES-256-GCM in both
 * directions. The first frame that fails authentication or decoding ends the
 * session: after tampering nothing further on the connection is believed.
 */
import { decodeCbor, encodeCbor } from './cbor.ts';
import type { FrameOpener, FrameSealer } from './aead.ts';
import { frameBytesMax, gcmTagBytes } from './constants.ts';
import { EkvError } from './errors.ts';

/** Messages one frame may carry. */
export const batchMessagesMax = 256;
import type { FramedSocket } from './framed-socket.ts';
import type { AnswerMeter } from './answer-memory.ts';

export class SecureSession {
  readonly startedAt = Date.now();
  private readonly fs: FramedSocket;
  private readonly sealer: FrameSealer;
  private readonly opener: FrameOpener;
  private failure: EkvError | null = null;
  private outbox: unknown[] = [];
  private flushScheduled = false;

  constructor(fs: FramedSocket, sealer: FrameSealer, opener: FrameOpener) {
    this.fs = fs;
    this.sealer = sealer;
    this.opener = opener;
  }

  /**
   * Start delivering messages. `onMessage` gets each decoded message in order;
   * `onClose` is called once, with the reason the session ended.
   */
  start(onMessage: (msg: unknown) => void, onClose: (err: EkvError) => void): void {
    this.fs.listen(
      (frame) => {
        if (this.failure) return;
        let batch: unknown;
        try {
          batch = decodeCbor(this.opener.open(frame));
        } catch (err) {
          this.fail(err instanceof EkvError ? err : new EkvError('PROTOCOL', String(err)));
          return;
        }
        if (!Array.isArray(batch) || batch.length === 0 || batch.length > batchMessagesMax) {
          this.fail(new EkvError('PROTOCOL', 'a frame must carry 1..' + batchMessagesMax + ' messages'));
          return;
        }
        for (const msg of batch) {
          if (this.failure) return;
          onMessage(msg);
        }
      },
      (err) => {
        if (!this.failure) this.failure = err;
        onClose(this.failure);
      },
    );
  }

  /**
   * Queue a message. Messages sent in the same turn of the event loop travel sealed together in one
   * frame (one AES-GCM operation and one write for all of them), up to the frame size limit.
   */
  send(msg: unknown): void {
    if (this.failure || this.fs.closed) return;
    this.outbox.push(msg);
    if (this.outbox.length >= batchMessagesMax) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      // At the end of this turn of the event loop (after every I/O callback of its poll phase), not of this
      // callback: answers produced by several reads of one turn (a log group made durable, replies from several
      // peers) leave as one frame, and a closed-loop client's next requests likewise.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || this.failure) return;
    const batch = this.outbox;
    this.outbox = [];
    // On a metered session every message sent is an answer serveRpc reserved a frame for: the frames written now
    // (at most a frame per message) take the reservations' place in the node-wide count.
    this.fs.meterOf?.unreserve(batch.length);
    this.seal(batch);
  }

  private seal(batch: unknown[]): void {
    const plain = encodeCbor(batch);
    if (plain.length + gcmTagBytes <= frameBytesMax || batch.length === 1) {
      this.fs.write(this.sealer.seal(plain));
      return;
    }
    // Too big together: split in halves (each message alone is within the limit by construction).
    const mid = batch.length >> 1;
    this.seal(batch.slice(0, mid));
    this.seal(batch.slice(mid));
  }

  get closed(): boolean {
    return this.failure !== null || this.fs.closed;
  }

  /** Bytes sent and not yet taken by the other side (this side's queues and the socket's). */
  get queuedBytes(): number {
    return this.fs.queuedBytes + this.outbox.length * frameBytesMax; // a message not yet sealed: at most a frame
  }

  /** Messages sent and not yet sealed (they leave at the end of this turn of the event loop). */
  get unsent(): number {
    return this.outbox.length;
  }

  /** The node-wide answer meter of this session's connection, if any (FramedSocket.meter). */
  get meter(): AnswerMeter | null {
    return this.fs.meterOf;
  }

  /** Stop (true) or restart (false) taking frames from the other side (FramedSocket.hold). */
  hold(on: boolean): void {
    this.fs.hold(on);
  }

  /** `cb` once what was written drained (FramedSocket.whenDrained). */
  whenDrained(cb: () => void): void {
    this.fs.whenDrained(cb);
  }

  close(reason?: EkvError): void {
    this.fail(reason ?? new EkvError('CLOSED', 'session closed'));
  }

  private fail(err: EkvError): void {
    if (this.failure) return;
    this.failure = err;
    this.fs.destroy(err);
  }
}
