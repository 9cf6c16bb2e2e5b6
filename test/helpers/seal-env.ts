// A blob store on a temporary unix socket and a client of it, for the sealing tests and bench.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createBlobClient, type BlobClient } from '../../enclave/seal/blob-client.ts';
import { SealedStore } from '../../enclave/seal/log.ts';
import { startBlobStore, type BlobStore } from '../../host/blob-store.ts';

export interface SealEnv {
  root: string;
  dir: string;
  socketPath: string;
  server: BlobStore;
  clients: BlobClient[];
  client(): BlobClient;
  dataKey: Buffer;
  nodeId: Buffer;
  open(): ReturnType<typeof SealedStore.open>;
  cleanup(): Promise<void>;
}

export async function startSealEnv(opts: { fsync?: boolean } = {}): Promise<SealEnv> {
  const root = mkdtempSync(join(tmpdir(), 'ekv-seal-'));
  const dir = join(root, 'blobs');
  const socketPath = join(root, 'b.sock');
  const server = await startBlobStore({ socketPath, dir, fsync: opts.fsync ?? false });
  const env: SealEnv = {
    root, dir, socketPath, server, clients: [],
    dataKey: randomBytes(32),
    nodeId: randomBytes(32),
    client() {
      const c = createBlobClient({ connect: () => net.connect(socketPath), timeoutMs: 10_000 });
      env.clients.push(c);
      return c;
    },
    open() {
      return SealedStore.open({ blobs: env.client(), dataKey: env.dataKey, nodeId: env.nodeId });
    },
    async cleanup() {
      for (const c of env.clients) c.close();
      await server.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
  return env;
}
