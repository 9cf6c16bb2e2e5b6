/**
 * Length-prefixed frames: u32 big-endian length, then that many bytes. The
 * decoder checks each length against its limit before buffering the body, so
 * a hostile peer cannot make us allocate more than `max` bytes per frame.
 */
import { EkvError } from './errors.ts';

export function encodeFrame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(4 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, 4);
  return out;
}

/** The first four bytes of an HTTP answer or request: what an HTTP port sends where a frame length should be. */
const httpStarts = new Set(['HTTP', 'GET ', 'POST', 'PUT ', 'HEAD']);

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private max: number;

  constructor(max: number) {
    this.max = max;
  }

  /** Change the limit (the handshake uses a smaller one than data frames). */
  setMax(max: number): void {
    this.max = max;
  }

  /** Feed bytes; returns every complete frame. Throws FRAME_TOO_LARGE on an oversized length. */
  push(chunk: Buffer): Buffer[] {
    this.append(chunk);
    const frames: Buffer[] = [];
    for (let f = this.nextFrame(); f !== null; f = this.nextFrame()) frames.push(f);
    return frames;
  }

  /** Buffer bytes without looking at them; `nextFrame` checks each length when its frame is taken. */
  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * The next complete frame, or null. Its length is checked against the limit in force now, so a
   * reader that raises the limit between frames (the handshake) judges each frame by its own rule.
   */
  nextFrame(): Buffer | null {
    if (this.buffered < 4) return null;
    const len = this.peek4().readUInt32BE(0);
    if (len > this.max) {
      // "HTTP" (an answer) or an HTTP method (a request) read as a length: someone pointed us at an HTTP port.
      const head = this.peek4().subarray(0, 4).toString('latin1');
      if (httpStarts.has(head)) {
        throw new EkvError('FRAME_TOO_LARGE', `not an enclave-kv node: it answered HTTP ("${head}..."); is this the node's HTTP port instead of its client port?`, { reason: 'HTTP' });
      }
      throw new EkvError('FRAME_TOO_LARGE', `frame of ${len} bytes exceeds the limit of ${this.max}`);
    }
    if (this.buffered < 4 + len) return null;
    return this.take(4 + len).subarray(4);
  }

  get pendingBytes(): number {
    return this.buffered;
  }

  private peek4(): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length >= 4) return first;
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0] as Buffer;
    if (first.length === n) {
      this.chunks.shift();
      this.buffered -= n;
      return first;
    }
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      this.buffered -= n;
      return first.subarray(0, n);
    }
    const joined = Buffer.concat(this.chunks);
    this.chunks = joined.length > n ? [joined.subarray(n)] : [];
    this.buffered -= n;
    return joined.subarray(0, n);
  }
}
