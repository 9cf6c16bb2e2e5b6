// A reader of u32-BE length-prefixed frames over a byte stream. A frame longer
// than the limit is never buffered: its bytes are counted off and dropped, and
// the caller is told once, so one oversized request cannot exhaust memory or
// desynchronise the frames that follow.
export type FrameEvent = { kind: 'frame'; body: Uint8Array } | { kind: 'oversized'; length: number };

export class FrameReader {
  readonly #bodyBytesMax: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #skip = 0;

  constructor(bodyBytesMax: number) {
    this.#bodyBytesMax = bodyBytesMax;
  }

  /** Feeds bytes; returns the complete frames (and oversized notices) they finish. */
  push(chunk: Buffer): FrameEvent[] {
    if (this.#skip > 0) {
      const dropped = Math.min(this.#skip, chunk.length);
      this.#skip -= dropped;
      chunk = chunk.subarray(dropped);
    }
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const events: FrameEvent[] = [];
    for (;;) {
      const event = this.#next();
      if (!event) return events;
      events.push(event);
    }
  }

  #next(): FrameEvent | null {
    if (this.#skip > 0 || this.#buffered < 4) return null;
    const all = this.#flatten();
    const length = all.readUInt32BE(0);
    if (length > this.#bodyBytesMax) {
      const available = all.length - 4;
      const dropped = Math.min(length, available);
      this.#skip = length - dropped;
      this.#keep(all.subarray(4 + dropped));
      return { kind: 'oversized', length };
    }
    if (all.length < 4 + length) return null;
    const body = Uint8Array.from(all.subarray(4, 4 + length));
    this.#keep(all.subarray(4 + length));
    return { kind: 'frame', body };
  }

  #flatten(): Buffer {
    if (this.#chunks.length > 1) this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0] as Buffer;
  }

  #keep(rest: Buffer): void {
    this.#chunks = rest.length > 0 ? [rest] : [];
    this.#buffered = rest.length;
  }
}

export function frame(body: Uint8Array): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}
