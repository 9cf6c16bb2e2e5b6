/**
 * A minimal RESP2 client for the benchmark's Redis baseline: GET, SET and
 * PING, many commands in flight per connection (replies come back in order,
 * so a FIFO of waiters matches them), and the commands written in one turn of
 * the event loop go out in one write, as the ekv SDK batches its frames.
 * Replies are parsed with every length bounded before anything is buffered.
 */
import net from 'node:net';

/** Larger bulk replies are refused (the benchmark's values are small). */
export const bulkBytesMax = 16 * 1024 * 1024;
/** A status or error line longer than this is not Redis talking. */
export const lineBytesMax = 64 * 1024;

export type RespReply = string | number | Buffer | null;

export class RespError extends Error {
  constructor(
    readonly code: 'REDIS' | 'PROTOCOL' | 'CLOSED',
    message: string,
  ) {
    super(message);
    this.name = 'RespError';
  }
}

type Waiter = { resolve: (r: RespReply) => void; reject: (e: Error) => void };
const CRLF = Buffer.from('\r\n');

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a;
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}

/**
 * Parses one reply at `pos`: the reply and the offset after it, or null when
 * more bytes are needed. Throws RespError('PROTOCOL') on what Redis never sends.
 */
export function parseReply(buf: Buffer, pos: number): { reply: RespReply; next: number } | { error: RespError; next: number } | null {
  if (pos >= buf.length) return null;
  const eol = buf.indexOf(CRLF, pos);
  if (eol < 0) {
    if (buf.length - pos > lineBytesMax) throw new RespError('PROTOCOL', 'reply line too long');
    return null;
  }
  if (eol - pos > lineBytesMax) throw new RespError('PROTOCOL', 'reply line too long');
  const type = buf[pos];
  const line = buf.toString('latin1', pos + 1, eol);
  switch (type) {
    case 0x2b: // '+'
      return { reply: line, next: eol + 2 };
    case 0x2d: // '-'
      return { error: new RespError('REDIS', line), next: eol + 2 };
    case 0x3a: // ':'
      return { reply: parseInteger(line), next: eol + 2 };
    case 0x24: { // '$'
      const len = parseInteger(line);
      if (len === -1) return { reply: null, next: eol + 2 };
      if (len < 0 || len > bulkBytesMax) throw new RespError('PROTOCOL', `bulk length ${len} out of bounds`);
      const start = eol + 2;
      if (buf.length < start + len + 2) return null;
      if (buf[start + len] !== 0x0d || buf[start + len + 1] !== 0x0a) throw new RespError('PROTOCOL', 'bulk string not followed by CRLF');
      return { reply: Buffer.from(buf.subarray(start, start + len)), next: start + len + 2 };
    }
    default:
      throw new RespError('PROTOCOL', `unsupported reply type 0x${(type as number).toString(16)}`);
  }
}

function parseInteger(s: string): number {
  if (!/^-?\d{1,15}$/.test(s)) throw new RespError('PROTOCOL', `not an integer: ${s.slice(0, 20)}`);
  return Number(s);
}

export class RespClient {
  private readonly socket: net.Socket;
  private readonly waiters: Waiter[] = [];
  private head = 0; // index of the oldest waiter (avoids O(n) shift)
  private buf: Buffer = Buffer.alloc(0);
  private outbox: Buffer[] = [];
  private flushScheduled = false;
  private failed: RespError | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.ingest(chunk));
    socket.on('error', (err) => this.fail(new RespError('CLOSED', err.message)));
    socket.on('close', () => this.fail(new RespError('CLOSED', 'connection closed')));
  }

  static connect(host: string, port: number): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, noDelay: true });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RespClient(s));
      });
      s.once('error', reject);
    });
  }

  command(args: Array<string | Buffer>): Promise<RespReply> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.outbox.push(encodeCommand(args));
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        process.nextTick(() => this.flush());
      }
    });
  }

  async get(key: Buffer | string): Promise<Buffer | null> {
    const r = await this.command(['GET', key]);
    if (r !== null && !Buffer.isBuffer(r)) throw new RespError('PROTOCOL', 'GET: unexpected reply');
    return r;
  }

  async set(key: Buffer | string, value: Buffer | string): Promise<void> {
    const r = await this.command(['SET', key, value]);
    if (r !== 'OK') throw new RespError('PROTOCOL', 'SET: unexpected reply');
  }

  close(): void {
    this.socket.destroy();
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.outbox.length === 0 || this.failed) return;
    const batch = this.outbox.length === 1 ? (this.outbox[0] as Buffer) : Buffer.concat(this.outbox);
    this.outbox = [];
    this.socket.write(batch);
  }

  private ingest(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    let pos = 0;
    try {
      for (;;) {
        const r = parseReply(this.buf, pos);
        if (r === null) break;
        pos = r.next;
        const w = this.waiters[this.head];
        if (!w) throw new RespError('PROTOCOL', 'a reply nobody asked for');
        this.waiters[this.head++] = undefined as unknown as Waiter;
        if ('error' in r) w.reject(r.error);
        else w.resolve(r.reply);
      }
    } catch (err) {
      this.fail(err instanceof RespError ? err : new RespError('PROTOCOL', String(err)));
      this.socket.destroy();
      return;
    }
    this.buf = pos === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(pos);
    if (this.head > 1024 && this.head * 2 > this.waiters.length) {
      this.waiters.splice(0, this.head);
      this.head = 0;
    }
  }

  private fail(err: RespError): void {
    if (this.failed) return;
    this.failed = err;
    for (let i = this.head; i < this.waiters.length; i++) this.waiters[i]?.reject(err);
    this.waiters.length = 0;
    this.head = 0;
  }
}
