/**
 * The enclave's client of the host's blob store (protocol/blob-wire.ts). The
 * host is untrusted: every response is checked for its id, its shape and its
 * size before use, and any deviation becomes `SealError('SEAL_IO')`. Content is
 * not checked here; the sealing layer authenticates every blob it reads.
 */
import type net from 'node:net';
import {
  blobBytesMax, blobFrameBytesMax, blobListNamesMax, decodeBlobMessage, encodeBlobMessage, isValidBlobName,
  isValidBlobPrefix, type BlobRequest,
} from '../../protocol/blob-wire.ts';
import { FrameDecoder } from '../../protocol/frame.ts';
import { SealError } from './errors.ts';

export interface BlobClient {
  /** Durable when resolved (the host fsyncs before answering). */
  put(name: string, bytes: Uint8Array): Promise<void>;
  /**
   * Appends to a segment file (`create`: start it anew); durable when resolved (the host fdatasyncs first).
   * Requests go out in call order; the host serves them in that order (docs/durability.md T1, T2).
   */
  append(name: string, bytes: Uint8Array, create: boolean): Promise<void>;
  /** null when no such blob. */
  get(name: string): Promise<Uint8Array | null>;
  /** Names starting with prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Idempotent. */
  delete(name: string): Promise<void>;
  close(): void;
}

export interface BlobClientInit {
  /** Returns a socket connected (or connecting) to the host's blob store. */
  connect: () => net.Socket;
  /** Per request (default 30 s). */
  timeoutMs?: number;
}

interface Pending {
  op: BlobRequest['op'];
  prefix: string;
  resolve: (value: Record<string, unknown>) => void;
  reject: (err: SealError) => void;
  timer: NodeJS.Timeout;
  /** The connection it was sent on: only that connection's end fails it (review-11 L1). */
  socket: net.Socket;
}

/** Requests in flight at once; more wait in line (bounded by the caller's own concurrency). */
const inflightMax = 16;

export function createBlobClient(init: BlobClientInit): BlobClient {
  return new SocketBlobClient(init);
}

class SocketBlobClient implements BlobClient {
  private socket: net.Socket | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(private readonly init: BlobClientInit) {}

  async put(name: string, bytes: Uint8Array): Promise<void> {
    checkName(name);
    if (bytes.length > blobBytesMax) throw new RangeError(`blob of ${bytes.length} bytes exceeds ${blobBytesMax}`);
    await this.request({ id: 0, op: 'put', name, data: bytes }, '');
  }

  async append(name: string, bytes: Uint8Array, create: boolean): Promise<void> {
    checkName(name);
    if (bytes.length > blobBytesMax) throw new RangeError(`append of ${bytes.length} bytes exceeds ${blobBytesMax}`);
    await this.request({ id: 0, op: 'append', name, data: bytes, create }, '');
  }

  async get(name: string): Promise<Uint8Array | null> {
    checkName(name);
    const res = await this.request({ id: 0, op: 'get', name }, '');
    const data = res['data'];
    if (data === null || data === undefined) return null;
    if (!(data instanceof Uint8Array) || data.length > blobBytesMax) throw ioError('bad get response');
    return data;
  }

  async list(prefix: string): Promise<string[]> {
    if (!isValidBlobPrefix(prefix)) throw new TypeError('invalid blob prefix');
    const res = await this.request({ id: 0, op: 'list', prefix }, prefix);
    return checkNames(res['names'], prefix);
  }

  async delete(name: string): Promise<void> {
    checkName(name);
    await this.request({ id: 0, op: 'delete', name }, '');
  }

  close(): void {
    this.closed = true;
    this.fail(new SealError('SEAL_CLOSED', 'blob client closed'));
  }

  /** Callers waiting for a place in flight, first come first served (appends must go out in call order). */
  private readonly admission: Array<() => void> = [];

  private async request(req: BlobRequest, prefix: string): Promise<Record<string, unknown>> {
    if (this.closed) throw new SealError('SEAL_CLOSED', 'blob client closed');
    if (this.pending.size + this.admitting >= inflightMax || this.admission.length > 0 || this.admitting > 0) {
      const failures = this.failures;
      await new Promise<void>((r) => this.admission.push(r));
      this.admitting--;
      if (this.closed) throw new SealError('SEAL_CLOSED', 'blob client closed');
      // Review-13 F1: requests sent before this one (in call order) failed with their connection while it waited;
      // sent now on another connection it would be served after them (an append behind a hole): it fails too.
      if (this.failures !== failures) throw ioError('blob store connection closed');
    }
    const socket = this.ensureSocket();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.admitNext();
        reject(ioError(`blob store did not answer ${req.op} in time`));
      }, this.init.timeoutMs ?? 30_000);
      this.pending.set(id, { op: req.op, prefix, resolve, reject, timer, socket });
      socket.write(encodeBlobMessage({ ...req, id }));
      if (this.admission.length > 0 && this.admitting === 0) this.admitNext();
    });
  }

  private ensureSocket(): net.Socket {
    if (this.socket !== null && !this.socket.destroyed) return this.socket;
    const socket = this.init.connect();
    const decoder = new FrameDecoder(blobFrameBytesMax);
    socket.on('data', (chunk: Buffer) => {
      try {
        // Stop at the first frame that ends the connection: the rest of a hostile chunk is not looked at.
        for (const frame of decoder.push(chunk)) {
          if (socket.destroyed) break;
          this.onFrame(frame, socket);
        }
      } catch {
        socket.destroy();
        this.fail(ioError('blob store sent an oversized frame'), socket);
      }
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.socket === socket) this.socket = null;
      this.fail(ioError('blob store connection closed'), socket);
    });
    this.socket = socket;
    return socket;
  }

  private onFrame(frame: Uint8Array, socket: net.Socket): void {
    const msg = decodeBlobMessage(frame);
    const id = msg?.['id'];
    const entry = typeof id === 'number' ? this.pending.get(id) : undefined;
    // An answer to a request sent on another connection is as unsolicited as one never asked for.
    if (msg === null || entry === undefined || entry.socket !== socket) {
      socket.destroy();
      this.fail(ioError('blob store sent an unsolicited or malformed response'), socket);
      return;
    }
    this.pending.delete(id as number);
    this.admitNext();
    clearTimeout(entry.timer);
    if (msg['ok'] === true) entry.resolve(msg);
    else entry.reject(ioError(`blob store refused ${entry.op}: ${String(msg['code']).slice(0, 32)}`));
  }

  /** Bumps each time requests failed with their connection: callers waiting for admission then fail too. */
  private failures = 0;

  /** Places taken by admitted callers that have not sent yet (so a newcomer cannot overtake them). */
  private admitting = 0;

  private admitNext(): void {
    while (this.admission.length > 0 && this.pending.size + this.admitting < inflightMax) {
      this.admitting++;
      (this.admission.shift() as () => void)();
    }
  }

  /** Fails the requests sent on `socket` (every request when none is named: the client is closing). */
  private fail(err: SealError, socket?: net.Socket): void {
    let failed = 0;
    for (const [id, entry] of this.pending) {
      if (socket !== undefined && entry.socket !== socket) continue;
      clearTimeout(entry.timer);
      entry.reject(err);
      this.pending.delete(id);
      failed++;
    }
    if (failed > 0) this.failures++;
    this.admitNext();
    if (this.closed) this.socket?.destroy();
  }
}

function checkName(name: string): void {
  if (!isValidBlobName(name)) throw new TypeError(`invalid blob name ${JSON.stringify(name).slice(0, 120)}`);
}

function checkNames(names: unknown, prefix: string): string[] {
  if (!Array.isArray(names) || names.length > blobListNamesMax) throw ioError('bad list response');
  for (const n of names) {
    if (!isValidBlobName(n) || !n.startsWith(prefix)) throw ioError('bad name in list response');
  }
  return names as string[];
}

function ioError(message: string): SealError {
  return new SealError('SEAL_IO', message);
}
