// Test fixtures that run emulated nodes in the test process, as `ekv up` does:
// - startTestRing(): N nodes via startLocalRing in a fresh short temp dir
//   (unix socket paths must stay under ~100 bytes), stopped and removed by stop().
// - startCustomNode(): one node whose emulated NSM the test builds itself (to
//   report other PCRs, e.g. a debug-mode enclave's zeros), assembled from the
//   same parts LocalNode uses: the host proxy and launchEnclave.
// Logs are silent unless EKV_TEST_LOG names a pino level.
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ClusterFile } from '../../client/cluster.ts';
import { localImage, localImageSettings, type ImageSettings } from '../../cli/local/image.ts';
import { startLocalRing, type LocalRing } from '../../cli/local/ring.ts';
import type { LocalNode } from '../../cli/local/node.ts';
import { EmulatorCa } from '../../emulator/ca.ts';
import { launchEnclave, type LaunchedEnclave } from '../../emulator/launcher.ts';
import { EmulatedNsm } from '../../emulator/nsm.ts';
import { serviceLogger } from '../../emulator/service-log.ts';
import { loopbackOnly, startHost, type RunningHost } from '../../host/host.ts';
import { fetchAttestation } from '../../host/http.ts';

/** The enclave image `npm run build` (and the vitest globalSetup) produces (sealed, closed, R=3, not single-node). */
export { defaultImagePath } from '../../cli/local/image.ts';

/**
 * The image a local ring with these options runs (startLocalRing builds the same one): the base for a
 * test's "modified image", which must differ from the ring's image only by the modification.
 */
export function imageFor(o: { nodes?: number; replicas?: number; access?: 'open' | 'closed'; seal?: boolean; extra?: Partial<ImageSettings> } = {}): Promise<string> {
  const settings = localImageSettings({ nodes: o.nodes ?? 1, replicas: o.replicas ?? 1, access: o.access ?? 'open', seal: o.seal ?? true });
  return localImage({ ...settings, ...o.extra });
}
const enclaveStartMs = 30_000;

export function testLogger(): Logger {
  return serviceLogger('test', process.env.EKV_TEST_LOG ?? 'silent');
}

/** A fresh directory with a short path (unix socket paths are limited to ~100 bytes). */
export function shortTempDir(prefix = 'ekv-'): string {
  return mkdtempSync(join('/tmp', prefix));
}

export interface TestRing {
  ring: LocalRing;
  cluster: ClusterFile;
  clusterFile: string;
  dir: string;
  node(i?: number): LocalNode;
  stop(): Promise<void>;
}

export async function startTestRing(opts: { nodes?: number; imagePath?: string } = {}): Promise<TestRing> {
  const dir = shortTempDir();
  let ring: LocalRing;
  try {
    ring = await startLocalRing({
      dir,
      nodes: opts.nodes ?? 1,
      replicas: 1,
      ...(opts.imagePath ? { imagePath: opts.imagePath } : {}),
      logger: testLogger(),
    });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    ring,
    cluster: ring.cluster,
    clusterFile: ring.clusterFile,
    dir,
    node: (i = 0) => {
      const n = ring.nodes[i];
      if (!n) throw new Error(`no node ${i}`);
      return n;
    },
    async stop() {
      await ring.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface CustomNode {
  ca: EmulatorCa;
  host: RunningHost;
  enclave: LaunchedEnclave;
  addr: string;
  http: string;
  dir: string;
  stop(): Promise<void>;
}

/**
 * One node whose NSM reports `pcrs(measured)` instead of the measured PCRs.
 * The enclave itself runs unchanged (it accepts its own debug document).
 */
export async function startCustomNode(opts: {
  pcrs: (measured: Map<number, Uint8Array>) => Map<number, Uint8Array>;
  imagePath?: string;
}): Promise<CustomNode> {
  const dir = shortTempDir();
  const logger = testLogger();
  const vsockDir = join(dir, 'vsock');
  await mkdir(vsockDir, { recursive: true, mode: 0o700 });
  const ca = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
  let host: RunningHost | null = null;
  let enclave: LaunchedEnclave | null = null;
  const stop = async () => {
    await enclave?.stop().catch(() => undefined);
    await host?.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    host = await startHost({ vsockDir, listenHost: '127.0.0.1', listenPort: 0, httpPort: 0, outboundPolicy: loopbackOnly, logger });
    enclave = await launchEnclave({
      // No KMS here: an image that seals nothing.
      imagePath: opts.imagePath ?? (await imageFor({ seal: false })),
      nsm: (measured) => new EmulatedNsm({ ca, pcrs: opts.pcrs(measured), moduleId: ca.newModuleId() }),
      workDir: join(dir, 'work'),
      env: { EKV_VSOCK_DIR: vsockDir, EKV_LOG_LEVEL: 'warn' },
      logger,
    });
    await waitForEnclave(host.enclaveSocket, enclave);
  } catch (err) {
    await stop();
    throw err;
  }
  return { ca, host, enclave, addr: `127.0.0.1:${host.port}`, http: `http://127.0.0.1:${host.httpPort}`, dir, stop };
}

async function waitForEnclave(socketPath: string, enclave: LaunchedEnclave): Promise<void> {
  let exited = false;
  void enclave.exited.then(() => (exited = true));
  const deadline = Date.now() + enclaveStartMs;
  for (;;) {
    if (exited) throw new Error('the enclave exited during start-up');
    try {
      await fetchAttestation(socketPath, Buffer.alloc(0));
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`the enclave did not start within ${enclaveStartMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Zero PCR0/1/2 and PCR8, as a debug-mode Nitro enclave reports them. */
export function debugModePcrs(measured: Map<number, Uint8Array>): Map<number, Uint8Array> {
  const out = new Map(measured);
  for (const i of [0, 1, 2, 8]) out.set(i, new Uint8Array(48));
  return out;
}
