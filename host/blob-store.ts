/**
 * The host's sealed-blob store: a unix-socket server that keeps opaque blobs as
 * files under one directory. The host cannot read the blobs (the enclave seals
 * them) and need not trust them either; it only bounds what a client may make
 * it store or send. Requests on one connection are served in order, so a put
 * is on disk (written to a temporary file, fsynced, renamed) before any later
 * request on that connection is answered.
 *
 * The sealed log's segments are append-only files (docs/durability.md T1-T6): every `append` queued on a
 * connection behind the one being served, to the same file, is written with it in one
 * synchronized write (group commit), and each is answered after that. A failed append poisons its file (later
 * appends to it are refused until it is created, put or deleted again) and cuts it back to its length before
 * the write, so no later record lands behind a hole. Requests still queued when their connection closes are
 * dropped unserved: their client has already failed them. The file appended to stays open between groups
 * (OpenSegments), opened with O_DSYNC: a group is one fstat (synchronous: an open file's inode, no disk I/O)
 * and one writev that returns only once its data, and the size that makes it readable, are on stable storage,
 * which is what a write followed by fdatasync gives, in one trip to the I/O thread pool instead of three
 * (docs/durability.md T1).
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc, fstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { open, readdir, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import {
  blobBytesMax, blobFrameBytesMax, blobListNamesMax, decodeBlobMessage, encodeBlobMessage, isRequestId,
  isValidBlobName, isValidBlobPrefix, type BlobResponse, type BlobWireCode,
} from '../protocol/blob-wire.ts';
import { FrameDecoder } from '../protocol/frame.ts';

export interface BlobStoreLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface BlobStoreInit {
  socketPath: string;
  dir: string;
  logger?: BlobStoreLogger;
  /** fsync each blob and the directory before acknowledging a put (default true). */
  fsync?: boolean;
}

export interface BlobStore {
  socketPath: string;
  /** Append requests served, and the groups (one synchronized write each) they were served in. */
  stats: { appends: number; appendGroups: number };
  close(): Promise<void>;
}

/** Requests a connection may queue before the store stops reading from it. */
const pipelineMax = 32;
const pipelineResume = 8;

class BlobFault extends Error {
  constructor(readonly code: BlobWireCode, message: string) {
    super(message);
  }
}

/** Names of files whose last append failed: appends to them are refused until they are created anew. */
type Poisoned = Set<string>;

/** Segment files kept open between append groups (the current segment of each log), at most this many. */
export const openSegmentsMax = 8;

/**
 * Open handles of files appended to, so that a group costs an fstat and a synchronized write instead of also
 * an open and a close. A handle is taken out while a group uses it. The fstat of every group still gives the
 * file's size and link count: a file cut, replaced or removed behind the store's back is appended to exactly as
 * by a fresh open (a handle whose file is no longer linked is dropped and the path opened again). A put, a delete
 * or a create of a name drops its handle and bumps its generation, so a group that was using an older handle
 * does not put it back.
 */
class OpenSegments {
  private readonly open = new Map<string, { fh: FileHandle; gen: number }>();
  private readonly gens = new Map<string, number>();

  gen(name: string): number {
    return this.gens.get(name) ?? 0;
  }

  /** The name's file is another file from now on (put, delete, create): its handle is closed. */
  async replaced(name: string): Promise<void> {
    this.gens.set(name, this.gen(name) + 1);
    const e = this.open.get(name);
    this.open.delete(name);
    // Bounded: old names forgotten (a group still holding one of their handles is caught by the nlink check).
    if (this.gens.size > 4 * openSegmentsMax) for (const n of [...this.gens.keys()].slice(0, openSegmentsMax)) if (!this.open.has(n)) this.gens.delete(n);
    await e?.fh.close().catch(() => undefined);
  }

  /** Takes the name's handle out (null: none open). */
  take(name: string): FileHandle | null {
    const e = this.open.get(name);
    if (!e) return null;
    this.open.delete(name);
    return e.fh;
  }

  /** Puts a handle back after a group that succeeded, unless the name was replaced meanwhile; closes the oldest past the bound. */
  keep(name: string, fh: FileHandle, gen: number): boolean {
    if (gen !== this.gen(name) || this.open.has(name)) return false;
    this.open.set(name, { fh, gen });
    while (this.open.size > openSegmentsMax) {
      const [oldest, e] = this.open.entries().next().value as [string, { fh: FileHandle }];
      this.open.delete(oldest);
      void e.fh.close().catch(() => undefined);
    }
    return true;
  }

  closeAll(): void {
    for (const e of this.open.values()) void e.fh.close().catch(() => undefined);
    this.open.clear();
  }
}

export async function startBlobStore(init: BlobStoreInit): Promise<BlobStore> {
  const poisoned: Poisoned = new Set();
  const segments = new OpenSegments();
  const stats = { appends: 0, appendGroups: 0 };
  mkdirSync(init.dir, { recursive: true, mode: 0o700 });
  try {
    unlinkSync(init.socketPath);
  } catch {
    // No stale socket.
  }
  const sockets = new Set<net.Socket>();
  const orphans: Orphans = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveConnection(socket, init, poisoned, stats, segments, orphans);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(init.socketPath, () => resolve());
  });
  init.logger?.info({ socketPath: init.socketPath, dir: init.dir }, 'blob store listening');
  return {
    socketPath: init.socketPath,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        segments.closeAll();
        server.close(() => resolve());
      }),
  };
}

type Decoded = { msg: Record<string, unknown> | null };

/**
 * Requests (or append groups) a connection had started when it closed: they still complete (a write in the I/O
 * thread pool cannot be called back). Every connection waits for them before it serves its next request
 * (review-11 F2): otherwise a killed enclave's started write could land after its relaunched self read the
 * segment, behind the records the new incarnation then appends elsewhere (recovery refuses such a log).
 */
type Orphans = Set<Promise<unknown>>;

function isAppendTo(d: Decoded | undefined, name: unknown): boolean {
  return d !== undefined && d.msg !== null && d.msg['op'] === 'append' && d.msg['create'] !== true && d.msg['name'] === name && isRequestId(d.msg['id']);
}

function serveConnection(
  socket: net.Socket, init: BlobStoreInit, poisoned: Poisoned, stats: BlobStore['stats'], segments: OpenSegments, orphans: Orphans,
): void {
  const decoder = new FrameDecoder(blobFrameBytesMax);
  // One request (or one group of appends) at a time per connection: ordering is the durability contract.
  const queue: Decoded[] = [];
  let running = false;
  let closed = false;
  let serving: Promise<unknown> | null = null;
  const run = async (): Promise<void> => {
    if (running) return;
    running = true;
    try {
      while (queue.length > 0 && !closed) {
        // What closed connections had started lands first (review-11 F2).
        while (orphans.size > 0) await Promise.allSettled([...orphans]);
        if (closed) break;
        const head = queue.shift() as Decoded;
        let responses: BlobResponse[];
        let work: Promise<BlobResponse[]>;
        if (head.msg !== null && head.msg['op'] === 'append' && isRequestId(head.msg['id'])) {
          const group = [head.msg];
          while (isAppendTo(queue[0], head.msg['name'])) group.push((queue.shift() as Decoded).msg as Record<string, unknown>);
          stats.appends += group.length;
          stats.appendGroups++;
          work = appendGroup(group, init, poisoned, segments);
        } else {
          work = handleFrame(head.msg, init, poisoned, segments).then((r) => [r]);
        }
        serving = work;
        try {
          responses = await work;
        } finally {
          serving = null;
        }
        // A group's answers leave in one write (one syscall, one read on the enclave's side).
        if (!socket.destroyed) socket.write(responses.length === 1 ? encodeBlobMessage(responses[0]!) : Buffer.concat(responses.map(encodeBlobMessage)));
        if (queue.length <= pipelineResume && socket.isPaused()) socket.resume();
      }
    } finally {
      running = false;
    }
  };
  socket.on('data', (chunk: Buffer) => {
    let frames: Buffer[];
    try {
      frames = decoder.push(chunk);
    } catch {
      init.logger?.warn({}, 'blob store: oversized frame, closing connection');
      socket.destroy();
      return;
    }
    for (const frame of frames) queue.push({ msg: decodeBlobMessage(frame) });
    // Backpressure: a client that pipelines faster than the disk stops being read.
    if (queue.length >= pipelineMax) socket.pause();
    void run();
  });
  socket.on('error', () => socket.destroy());
  // Queued requests of a closed connection are not served: their client already counts them as failed.
  socket.on('close', () => {
    closed = true;
    queue.length = 0;
    const started = serving;
    if (started !== null) {
      const done = started.then(() => undefined, () => undefined);
      orphans.add(done);
      void done.then(() => orphans.delete(done));
    }
  });
}

async function handleFrame(msg: Record<string, unknown> | null, init: BlobStoreInit, poisoned: Poisoned, segments: OpenSegments): Promise<BlobResponse> {
  const id = msg !== null && isRequestId(msg['id']) ? msg['id'] : 0;
  try {
    if (msg === null || !isRequestId(msg['id'])) throw new BlobFault('BAD_REQUEST', 'not a request');
    return { id, ok: true, ...(await dispatch(msg, init, poisoned, segments)) };
  } catch (err) {
    if (err instanceof BlobFault) return { id, ok: false, code: err.code, message: err.message };
    init.logger?.warn({ err: String(err) }, 'blob store I/O error');
    return { id, ok: false, code: 'IO', message: 'storage error' };
  }
}

async function dispatch(msg: Record<string, unknown>, init: BlobStoreInit, poisoned: Poisoned, segments: OpenSegments): Promise<Partial<BlobResponse>> {
  switch (msg['op']) {
    case 'put': {
      const name = checkName(msg['name']);
      poisoned.delete(name);
      await segments.replaced(name);
      await putBlob(init, name, msg['data'], init.fsync ?? true);
      return {};
    }
    case 'get':
      return { data: await getBlob(init.dir, checkName(msg['name'])) };
    case 'list':
      if (!isValidBlobPrefix(msg['prefix'])) throw new BlobFault('BAD_NAME', 'invalid prefix');
      return { names: await listBlobs(init.dir, msg['prefix']) };
    case 'delete': {
      const name = checkName(msg['name']);
      poisoned.delete(name);
      await segments.replaced(name);
      await unlink(join(init.dir, name)).catch(ignoreMissing);
      return {};
    }
    default:
      throw new BlobFault('BAD_REQUEST', 'unknown op');
  }
}

/**
 * Appends `group` (one request that may create the file, then appends to the same file) with one
 * synchronized (O_DSYNC) write. All succeed or all fail; a failure poisons the file and cuts it back to its old length.
 */
async function appendGroup(group: Array<Record<string, unknown>>, init: BlobStoreInit, poisoned: Poisoned, segments: OpenSegments): Promise<BlobResponse[]> {
  const ids = group.map((m) => m['id'] as number);
  const fail = (code: BlobWireCode, message: string): BlobResponse[] => ids.map((id) => ({ id, ok: false, code, message }));
  const name = group[0]!['name'];
  if (!isValidBlobName(name)) return fail('BAD_NAME', 'invalid blob name');
  const datas: Uint8Array[] = [];
  let bytes = 0;
  for (const m of group) {
    const data = m['data'];
    if (!(data instanceof Uint8Array)) return fail('BAD_REQUEST', 'append needs data');
    datas.push(data);
    bytes += data.length;
  }
  const create = group[0]!['create'] === true;
  if (create) {
    poisoned.delete(name);
    await segments.replaced(name);
  } else if (poisoned.has(name)) return fail('IO', 'an earlier append to this blob failed');
  const path = join(init.dir, name);
  const fsync = init.fsync ?? true;
  // Every write to a segment is synchronized I/O data integrity completion (O_DSYNC): durable when it returns.
  // (A platform without O_DSYNC gets the write and an fdatasync, as before.)
  const dsync = fsync && typeof fsc.O_DSYNC === 'number' ? fsc.O_DSYNC : 0;
  const gen = segments.gen(name);
  let size: number | null = null;
  let fh: FileHandle | null = null;
  let kept = false;
  try {
    if (create) {
      fh = await open(path, fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC | dsync, 0o600);
      size = 0;
    } else {
      fh = segments.take(name);
      let st = fh === null ? null : fstatSync(fh.fd);
      if (fh === null || st === null || st.nlink === 0) {
        // None open, or its file was removed or replaced behind the store's back: the path's file, as before.
        await fh?.close().catch(() => undefined);
        fh = null;
        fh = await open(path, fsc.O_RDWR | dsync, 0o600);
        st = fstatSync(fh.fd);
      }
      size = st.size;
    }
    if (size + bytes > blobBytesMax) {
      poisoned.add(name);
      return fail('TOO_LARGE', 'blob too large');
    }
    let written = (await fh.writev(datas, size)).bytesWritten;
    if (written < bytes) {
      const all = Buffer.concat(datas);
      while (written < bytes) written += (await fh.write(all, written, bytes - written, size + written)).bytesWritten;
    }
    // Durable already (O_DSYNC); a new file's name is made durable with its directory.
    if (fsync && dsync === 0) await fh.datasync();
    if (create && fsync) await syncDir(init.dir);
    kept = segments.keep(name, fh, gen);
    return ids.map((id) => ({ id, ok: true }));
  } catch (err) {
    poisoned.add(name);
    if (fh !== null && size !== null) await fh.truncate(size).catch(() => undefined);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return fail('IO', 'no such blob to append to');
    init.logger?.warn({ err: String(err) }, 'blob store I/O error');
    return fail('IO', 'storage error');
  } finally {
    if (!kept) await fh?.close().catch(() => undefined);
  }
}

function checkName(name: unknown): string {
  if (!isValidBlobName(name)) throw new BlobFault('BAD_NAME', 'invalid blob name');
  return name;
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err;
}

async function putBlob(init: BlobStoreInit, name: string, data: unknown, fsync: boolean): Promise<void> {
  if (!(data instanceof Uint8Array)) throw new BlobFault('BAD_REQUEST', 'put needs data');
  if (data.length > blobBytesMax) throw new BlobFault('TOO_LARGE', 'blob too large');
  // Temporary names start with '.', which no valid blob name does, so list never shows them.
  const tmp = join(init.dir, `.tmp-${randomBytes(8).toString('hex')}`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    if (fsync) await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(init.dir, name));
  if (fsync) await syncDir(init.dir);
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function getBlob(dir: string, name: string): Promise<Buffer | null> {
  const path = join(dir, name);
  try {
    const st = await stat(path);
    // Something else put an oversized file there: refuse rather than send it.
    if (!st.isFile() || st.size > blobBytesMax) throw new BlobFault('TOO_LARGE', 'stored blob too large');
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function listBlobs(dir: string, prefix: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => n.startsWith(prefix) && isValidBlobName(n)).sort();
  if (names.length > blobListNamesMax) throw new BlobFault('TOO_MANY', 'too many blobs');
  return names;
}
