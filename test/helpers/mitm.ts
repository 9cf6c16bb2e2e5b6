// A man in the middle between a client and a node's host: a TCP proxy on
// 127.0.0.1 that sees the plaintext length prefixes (as any on-path attacker
// does) and can, per direction, flip a byte, drop a frame, replay a frame,
// swap two frames, truncate the stream, or rewrite a frame with a function.
//
// Units: `offset` counts bytes of one direction's stream (length prefixes
// included); `frame` counts length-prefixed frames of one direction, from 0
// (client->server frame 0 is the hello, 1 the finish, then requests; server->
// client frame 0 is the server hello, then answers). Actions apply to the
// first `tamperConnections` connections (default 1); later ones pass through
// untouched, so a test can also check that the client recovers.
import net from 'node:net';

export type Direction = 'c2s' | 's2c';

/**
 * A position in one direction's stream: an absolute byte offset, or byte `at`
 * of frame `frame` (0..3 are its length prefix; a negative `at` counts from the frame's end).
 */
export type Where = { offset: number } | { frame: number; at: number };

export type MitmAction =
  /** XOR one byte with `mask` (default 0x01). */
  | { kind: 'flip'; where: Where; mask?: number }
  /** Do not forward frame `frame`. */
  | { kind: 'drop'; frame: number }
  /** Forward frame `frame` again right after frame `after` (default: right after itself). */
  | { kind: 'replay'; frame: number; after?: number }
  /** Swap frames `frame` and `frame + 1`. */
  | { kind: 'reorder'; frame: number }
  /** Forward the stream up to (not including) the byte at `where`, then cut the connection. */
  | { kind: 'truncate'; where: Where }
  /** Replace frame `frame`'s body by what `rewrite` returns (the length prefix is recomputed). */
  | { kind: 'rewrite'; frame: number; rewrite: (body: Buffer, ctx: FrameContext) => Buffer | Promise<Buffer> };

export interface FrameContext {
  /** Bodies of the frames seen so far in each direction on this connection (before tampering). */
  seen: Record<Direction, Buffer[]>;
}

export interface MitmOptions {
  /** Where to relay: host:port, or a function choosing per connection. */
  target: string | ((connection: number) => string);
  c2s?: MitmAction[];
  s2c?: MitmAction[];
  tamperConnections?: number;
}

export interface Mitm {
  addr: string;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Actions that actually took effect (`c2s:flip@12` ...), to show a test hit what it meant to. */
  readonly fired: string[];
  close(): Promise<void>;
}

/** Frames larger than this are not parsed (the proxy then forwards bytes as they are). */
const frameParseBytesMax = 8 * 1024 * 1024;

export async function startMitm(opts: MitmOptions): Promise<Mitm> {
  const sockets = new Set<net.Socket>();
  const fired: string[] = [];
  let connections = 0;
  const server = net.createServer({ noDelay: true }, (client) => {
    const n = connections++;
    const target = typeof opts.target === 'string' ? opts.target : opts.target(n);
    const [host, port] = splitAddr(target);
    const upstream = net.connect({ host, port, noDelay: true });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    const tamper = n < (opts.tamperConnections ?? 1);
    const seen: Record<Direction, Buffer[]> = { c2s: [], s2c: [] };
    const cut = () => {
      client.destroy();
      upstream.destroy();
    };
    pipeDirection(client, upstream, 'c2s', tamper ? (opts.c2s ?? []) : [], seen, fired, cut);
    pipeDirection(upstream, client, 's2c', tamper ? (opts.s2c ?? []) : [], seen, fired, cut);
    client.on('error', cut);
    upstream.on('error', cut);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    addr: `127.0.0.1:${port}`,
    get connections() {
      return connections;
    },
    fired,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function splitAddr(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

/**
 * One direction: parse frames as they arrive, apply the actions in arrival
 * order (a promise chain, so an async rewrite keeps the order), forward.
 */
function pipeDirection(
  from: net.Socket,
  to: net.Socket,
  dir: Direction,
  actions: MitmAction[],
  seen: Record<Direction, Buffer[]>,
  fired: string[],
  cut: () => void,
): void {
  let pending: Buffer = Buffer.alloc(0);
  let streamOffset = 0; // offset of the next frame's first byte
  let index = 0;
  let held: Buffer | null = null; // a frame kept back by `reorder`
  let chain = Promise.resolve();
  let done = false;
  const write = (b: Buffer) => {
    if (!done && !to.destroyed && b.length > 0) to.write(b);
  };

  const onFrame = async (raw: Buffer, i: number, offset: number) => {
    if (done) return;
    const body = raw.subarray(4);
    seen[dir].push(Buffer.from(body));
    let out = Buffer.from(raw);
    for (const a of actions) {
      if (a.kind !== 'rewrite' || a.frame !== i) continue;
      const nb = await a.rewrite(Buffer.from(body), { seen });
      out = Buffer.concat([lengthPrefix(nb.length), nb]);
      fired.push(`${dir}:rewrite#${i}`);
    }
    for (const a of actions) {
      const at = a.kind === 'flip' ? position(a.where, i, offset, out.length) : null;
      if (a.kind !== 'flip' || at === null) continue;
      out[at] = (out[at] as number) ^ (a.mask ?? 0x01);
      fired.push(`${dir}:flip#${i}@${at}`);
    }
    for (const a of actions) {
      const at = a.kind === 'truncate' ? position(a.where, i, offset, out.length) : null;
      if (at === null) continue;
      write(out.subarray(0, at));
      fired.push(`${dir}:truncate#${i}@${at}`);
      done = true;
      // Let the partial frame reach the other side before the cut.
      setTimeout(cut, 20);
      return;
    }
    if (actions.some((a) => a.kind === 'drop' && a.frame === i)) {
      fired.push(`${dir}:drop#${i}`);
      return;
    }
    if (actions.some((a) => a.kind === 'reorder' && a.frame === i)) {
      held = out;
      fired.push(`${dir}:hold#${i}`);
      return;
    }
    write(out);
    if (held && actions.some((a) => a.kind === 'reorder' && a.frame === i - 1)) {
      write(held);
      held = null;
      fired.push(`${dir}:reorder#${i - 1}`);
    }
    for (const a of actions) {
      if (a.kind === 'replay' && (a.after ?? a.frame) === i) {
        const original = seen[dir][a.frame];
        if (original) {
          write(Buffer.concat([lengthPrefix(original.length), original]));
          fired.push(`${dir}:replay#${a.frame}`);
        }
      }
    }
  };

  from.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      if (pending.length < 4) return;
      const len = pending.readUInt32BE(0);
      if (len > frameParseBytesMax) {
        // Not a frame we can parse: pass the rest through unmodified.
        const rest = pending;
        pending = Buffer.alloc(0);
        chain = chain.then(() => write(rest));
        return;
      }
      if (pending.length < 4 + len) return;
      const raw = pending.subarray(0, 4 + len);
      pending = pending.subarray(4 + len);
      const i = index++;
      const offset = streamOffset;
      streamOffset += raw.length;
      chain = chain.then(() => onFrame(raw, i, offset)).catch(() => cut());
    }
  });
  // A side that closes: forward what is already queued, then close the other side too.
  from.on('close', () => {
    chain = chain.then(() => {
      if (!to.destroyed) to.end();
      setTimeout(cut, 200).unref();
    });
  });
}

function lengthPrefix(n: number): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(n, 0);
  return head;
}

/** Where `where` falls inside frame `index` (stream offset `offset`, `length` bytes), or null. */
function position(where: Where, index: number, offset: number, length: number): number | null {
  if ('offset' in where) return where.offset >= offset && where.offset < offset + length ? where.offset - offset : null;
  if (where.frame !== index) return null;
  const at = where.at >= 0 ? where.at : length + where.at;
  return at >= 0 && at < length ? at : null;
}
