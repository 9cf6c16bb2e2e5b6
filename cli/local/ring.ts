/**
 * A local ring on the emulated TEE, as `ekv up` runs it: one CA (the trust
 * root of this emulated world), N nodes, and `cluster.json` for clients. The
 * ports and the image settings are kept in `ring.json`, so `ekv up --dir DIR`
 * run again brings the same ring back at the same addresses, on the same image.
 *
 * The ring runs the image variant built for its options (cli/local/image.ts):
 * access mode, replication factor, sealing and single-node are compiled into
 * the image, never passed to the enclave, and the cluster file pins its PCR0.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import { loadCluster, type ClusterFile } from '../../client/cluster.ts';
import { connect } from '../../client/index.ts';
import { EmulatorCa } from '../../emulator/ca.ts';
import type { ImdsInit } from '../../emulator/imds.ts';
import { defaultImagePath, localImage, localImageSettings, type ImageSettings } from './image.ts';
import { kmsEnv, localBlobStore, startLocalKms, type LocalKms } from './kms.ts';
import { LocalNode } from './node.ts';
import { waitForRing } from './ready.ts';
import { rememberTrust } from '../trust-store.ts';

export interface RingState {
  version: 1;
  replicas: number;
  nodes: Array<{ name: string; port: number; httpPort: number }>;
  /** The settings of the ring's image (absent in rings started before images carried them). */
  image?: ImageSettings;
}

export interface LocalRingOptions {
  dir: string;
  nodes: number;
  replicas: number;
  /**
   * Run exactly this image (its compiled settings apply); absent, or the default image (dist/enclave.mjs):
   * the variant built for these options.
   */
  imagePath?: string;
  /** Settings over those the options imply (tests: e.g. a test seam). */
  imageSettings?: Partial<ImageSettings>;
  logger: Logger;
  progress?: (line: string) => void;
  isolate?: 'auto' | 'required' | 'off';
  /** Sealed persistence through the emulated KMS (default true). */
  seal?: boolean;
  /** What the ring does with keys outside any namespace (default open, the quick start's setting). */
  access?: 'open' | 'closed';
  /** The emulated IMDS's credential rotation (tests). */
  imds?: ImdsInit;
  /** Further images the emulated KMS key admits (attack tests' seam control images; cli/local/kms.ts). */
  kmsAdmitImages?: string[];
  /** Record the cluster's trust section in the user's trust store (cli/trust-store.ts); default true. */
  rememberTrust?: boolean;
  /** Each node's host proxy as its own `ekv host` process (LocalNodeOptions.hostProcess; fault tests). */
  hostProcess?: boolean;
  /**
   * The order in which the nodes start (indices into ring.json's list; default 0, 1, ...), each once the
   * previous one's enclave accepts connections, `startGapMs` (default 0) later. Fault tests restart a whole
   * ring in an adversarial order (docs/fault-testing.md); the node list and ring.json keep index order.
   * Only for a restart (ring.json exists): on a first start node 0 founds the ring.
   */
  startOrder?: number[];
  startGapMs?: number;
  /** How long to wait for the ring to form once every enclave is up (default 60 s); 0: do not wait. */
  formTimeoutMs?: number;
}

export interface LocalRing {
  dir: string;
  nodes: LocalNode[];
  ca: EmulatorCa;
  clusterFile: string;
  cluster: ClusterFile;
  /** The image every node runs, and its settings. */
  imagePath: string;
  settings: ImageSettings | null;
  kms: LocalKms | null;
  stop(): Promise<void>;
}

function readState(path: string): RingState | null {
  if (!existsSync(path)) return null;
  const s = JSON.parse(readFileSync(path, 'utf8')) as RingState;
  if (s.version !== 1 || !Array.isArray(s.nodes)) throw new Error(`${path}: not a ring state file`);
  return s;
}

export function writeJsonAtomic(path: string, value: unknown): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n', { mode: 0o644 });
  renameSync(tmp, path);
}

export async function startLocalRing(o: LocalRingOptions): Promise<LocalRing> {
  const dir = resolve(o.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const statePath = join(dir, 'ring.json');
  const previous = readState(statePath);
  const count = previous ? previous.nodes.length : o.nodes;
  const replicas = previous ? previous.replicas : o.replicas;
  const progress = o.progress ?? (() => undefined);
  if (previous) progress(`restarting the ring in ${dir} (${count} nodes, as it was)`);
  const order = o.startOrder ?? Array.from({ length: count }, (_, i) => i);
  if (order.length !== count || new Set(order).size !== count || order.some((i) => !Number.isInteger(i) || i < 0 || i >= count)) {
    throw new Error(`startOrder must list each of the ${count} node indices once`);
  }
  // On a first start node 0 founds the ring and the others join through it: only a restart may reorder.
  if (!previous && order.some((n, i) => n !== i)) throw new Error('startOrder applies to a ring restarted from its directory');

  // The default image named explicitly means the same as no image: the variant for these options.
  const explicitImage = o.imagePath !== undefined && resolve(o.imagePath) !== defaultImagePath ? resolve(o.imagePath) : undefined;
  const settings: ImageSettings | null = explicitImage !== undefined
    ? null
    : previous?.image ?? { ...localImageSettings({ seal: o.seal ?? true, access: o.access ?? 'open', replicas, nodes: count }), ...o.imageSettings };
  const imagePath = explicitImage ?? (await localImage(settings as ImageSettings));
  const ca = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
  const sealed = settings ? settings.kmsKeyArn !== '' : o.seal !== false;
  const kms = sealed ? await startLocalKms({ dir, ca, imagePath, logger: o.logger, ...(o.imds ? { imds: o.imds } : {}), ...(o.kmsAdmitImages ? { admitImages: o.kmsAdmitImages } : {}) }) : null;
  const kmsInfo = kms?.info ?? null;
  if (kmsInfo) writeJsonAtomic(join(dir, 'kms.json'), kmsInfo);
  /** The nodes started so far, in start order; `slots` by index. */
  const nodes: LocalNode[] = [];
  const slots: Array<LocalNode | undefined> = new Array<LocalNode | undefined>(count).fill(undefined);
  const stopAll = async () => {
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    await kms?.close();
  };
  try {
    for (const [started, i] of order.entries()) {
      if (started > 0 && o.startGapMs) await new Promise((r) => setTimeout(r, o.startGapMs));
      const name = `node-${i + 1}`;
      const prev = previous?.nodes[i];
      const dataDir = join(dir, name, 'data');
      progress(`starting ${name} (${started + 1}/${count})`);
      const node: LocalNode = new LocalNode({
        name,
        dir: join(dir, name),
        imagePath,
        ca,
        listenPort: prev?.port ?? 0,
        httpPort: prev?.httpPort ?? 0,
        logger: o.logger,
        // The first node founds the ring (on its first boot; later it waits for the others to reach it); the
        // others, and any relaunched enclave, join through a live member, with the ring's ring-secret.
        enclaveEnv: ({ addr, relaunch }): Record<string, string> => {
          if (kms && i > 0) provideRingSecret(dir, dataDir);
          const others: string[] = nodes.filter((n) => n !== node && n.enclave !== null).map((n) => n.addr);
          const join: string = relaunch || i > 0 ? (others[0] ?? '') : '';
          return { EKV_JOIN: join === addr ? '' : join, ...(kmsInfo ? kmsEnv(kmsInfo) : {}) };
        },
        ...(kms ? { startBlobStore: localBlobStore(o.logger), imdsUrl: kms.info.imdsUrl } : {}),
        ...(o.isolate ? { isolate: o.isolate } : {}),
        ...(o.hostProcess ? { hostProcess: true } : {}),
      });
      nodes.push(node);
      slots[i] = node;
      await node.start();
      if (kms && i === 0) publishRingSecret(dataDir, dir);
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  nodes.splice(0, nodes.length, ...(slots as LocalNode[]));

  const state: RingState = {
    version: 1, replicas, nodes: nodes.map((n) => ({ name: n.name, port: n.host.port, httpPort: n.host.httpPort })),
    ...(settings ? { image: settings } : {}),
  };
  writeJsonAtomic(statePath, state);
  const m = nodes[0]?.measurement;
  const clusterFile = join(dir, 'cluster.json');
  const cluster: ClusterFile = {
    version: 1,
    nodes: nodes.map((n) => ({ addr: n.addr, http: n.http })),
    trust: {
      roots: [ca.rootPem],
      pcrs: m ? { '0': m.pcr0.toString('hex'), '1': m.pcr1.toString('hex'), '2': m.pcr2.toString('hex') } : {},
    },
    replicas,
  };
  try {
    // The ring id is pinned when the ring is founded and kept across restarts: a node that comes back in
    // another ring (its host wiped it and it founded anew) is then refused by clients (WRONG_RING).
    const ringId = (previous && existsSync(clusterFile) ? loadCluster(clusterFile).trust.ringId : undefined) ?? (kms ? await learnRingId(cluster) : undefined);
    if (ringId) cluster.trust.ringId = ringId;
  } catch (err) {
    await stopAll();
    throw err;
  }
  writeJsonAtomic(clusterFile, cluster);
  // This process created (or loaded) the emulated CA and measured the image itself, so the trust
  // section it just wrote is the user's own: record it, and `ekv get -c DIR/cluster.json` needs no flag.
  // A cluster file from anyone else is not in the store and is used for its addresses only.
  if (o.rememberTrust !== false) rememberTrust(cluster.trust, `ekv up ${clusterFile}`);
  try {
    if (o.formTimeoutMs !== 0) await waitForRing(cluster, o.formTimeoutMs ?? 60_000, progress);
  } catch (err) {
    await stopAll();
    throw err;
  }
  return { dir, nodes, ca, clusterFile, cluster, imagePath, settings, kms, stop: stopAll };
}

/** The ring-secret blob (KMS ciphertext, not secret) beside the cluster file, for nodes that join later. */
export const ringSecretFile = 'ring-secret';

function publishRingSecret(nodeDataDir: string, ringDir: string): void {
  const from = join(nodeDataDir, ringSecretFile);
  if (existsSync(from) && !existsSync(join(ringDir, ringSecretFile))) copyFileSync(from, join(ringDir, ringSecretFile));
}

/** Give a node's host the ring's ring-secret blob before the node's first boot (a node never founds a second ring). */
export function provideRingSecret(ringDir: string, nodeDataDir: string): void {
  const from = join(ringDir, ringSecretFile);
  mkdirSync(nodeDataDir, { recursive: true, mode: 0o700 });
  if (existsSync(from) && !existsSync(join(nodeDataDir, ringSecretFile))) copyFileSync(from, join(nodeDataDir, ringSecretFile));
}

/** The ring id the first node's attested key signs in its handshake. */
async function learnRingId(cluster: ClusterFile): Promise<string | undefined> {
  // This process wrote the trust section itself (its CA, its image's measurement): it may trust the file.
  const kv = await connect({ cluster: { ...cluster, nodes: cluster.nodes.slice(0, 1) }, trustClusterFile: true, timeoutMs: 10_000 });
  try {
    const conn = kv.node(cluster.nodes[0]!.addr);
    await conn.ensure();
    return conn.ringId?.toString('hex');
  } finally {
    await kv.close();
  }
}
