/**
 * An established channel: CBOR messages sealed with AES-256-GCM in both
 * directions. The first frame that fails authentication or decoding ends the
 * session: after tampering nothing further on the connection is believed.
 */
import { decodeCbor, encodeCbor } from './cbor.ts';
import type { FrameOpener, FrameSealer } from './aead.ts';
import { EkvError } from './errors.ts';
import type { FramedSocket } from './framed-socket.ts';

export class SecureSession {
  readonly startedAt = Date.now();
  private readonly fs: FramedSocket;
  private readonly sealer: FrameSealer;
  private readonly opener: FrameOpener;
  private failure: EkvError | null = null;

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
        let msg: unknown;
        try {
          msg = decodeCbor(this.opener.open(frame));
        } catch (err) {
          this.fail(err instanceof EkvError ? err : new EkvError('PROTOCOL', String(err)));
          return;
        }
        onMessage(msg);
      },
      (err) => {
        if (!this.failure) this.failure = err;
        onClose(this.failure);
      },
    );
  }

  send(msg: unknown): void {
    if (this.failure || this.fs.closed) return;
    this.fs.write(this.sealer.seal(encodeCbor(msg)));
  }

  get closed(): boolean {
    return this.failure !== null || this.fs.closed;
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
