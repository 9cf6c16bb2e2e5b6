/**
 * The host's sealed-blob store: a unix-socket server that keeps opaque blobs as
 * files under one directory. The host cannot read the blobs (the enclave seals
 * them) and need not trust them either; it only bounds what a client may make
 * it store or send. Requests on one connection are served in order, so a put
 * is on disk (written to a temporary file, fsynced, renamed) before any later
 * request on that connection is answered.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, unlinkSync } from 'node:fs';
import { open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
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

export async function startBlobStore(init: BlobStoreInit): Promise<BlobStore> {
  mkdirSync(init.dir, { recursive: true, mode: 0o700 });
  try {
    unlinkSync(init.socketPath);
  } catch {
    // No stale socket.
  }
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveConnection(socket, init);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(init.socketPath, () => resolve());
  });
  init.logger?.info({ socketPath: init.socketPath, dir: init.dir }, 'blob store listening');
  return {
    socketPath: init.socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function serveConnection(socket: net.Socket, init: BlobStoreInit): void {
  const decoder = new FrameDecoder(blobFrameBytesMax);
  // One request at a time per connection: ordering is the durability contract.
  let chain: Promise<void> = Promise.resolve();
  let queued = 0;
  socket.on('data', (chunk: Buffer) => {
    let frames: Buffer[];
    try {
      frames = decoder.push(chunk);
    } catch {
      init.logger?.warn({}, 'blob store: oversized frame, closing connection');
      socket.destroy();
      return;
    }
    for (const frame of frames) {
      queued += 1;
      chain = chain.then(async () => {
        const response = await handleFrame(frame, init);
        if (!socket.destroyed) socket.write(encodeBlobMessage(response));
        queued -= 1;
        if (queued <= pipelineResume && socket.isPaused()) socket.resume();
      });
    }
    // Backpressure: a client that pipelines faster than the disk stops being read.
    if (queued >= pipelineMax) socket.pause();
  });
  socket.on('error', () => socket.destroy());
}

async function handleFrame(frame: Uint8Array, init: BlobStoreInit): Promise<BlobResponse> {
  const msg = decodeBlobMessage(frame);
  const id = msg !== null && isRequestId(msg['id']) ? msg['id'] : 0;
  try {
    if (msg === null || !isRequestId(msg['id'])) throw new BlobFault('BAD_REQUEST', 'not a request');
    return { id, ok: true, ...(await dispatch(msg, init)) };
  } catch (err) {
    if (err instanceof BlobFault) return { id, ok: false, code: err.code, message: err.message };
    init.logger?.warn({ err: String(err) }, 'blob store I/O error');
    return { id, ok: false, code: 'IO', message: 'storage error' };
  }
}

async function dispatch(msg: Record<string, unknown>, init: BlobStoreInit): Promise<Partial<BlobResponse>> {
  switch (msg['op']) {
    case 'put':
      await putBlob(init, checkName(msg['name']), msg['data'], init.fsync ?? true);
      return {};
    case 'get':
      return { data: await getBlob(init.dir, checkName(msg['name'])) };
    case 'list':
      if (!isValidBlobPrefix(msg['prefix'])) throw new BlobFault('BAD_NAME', 'invalid prefix');
      return { names: await listBlobs(init.dir, msg['prefix']) };
    case 'delete':
      await unlink(join(init.dir, checkName(msg['name']))).catch(ignoreMissing);
      return {};
    default:
      throw new BlobFault('BAD_REQUEST', 'unknown op');
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
