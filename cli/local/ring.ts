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
import { generateIdentity, loadIdentity, saveIdentity } from '../../client/identity.ts';
import { compareSeen, defaultSeenFile, readSeen, recoveryStatuses, signOpens, writeSeen } from '../recovery.ts';

/** The local user's recovery member key of a ring started with `recovery` (docs/recovery.md). */
export const recoveryKeyFile = 'recovery.key';

function hasRecovery(s: ImageSettings | null): boolean {
  return (s?.recoveryMembers?.length ?? 0) > 0;
}

/** A new sealed ring with `recovery`: its image names DIR/recovery.key (made now) as the one member, k = 1. */
function localRecoveryMember(dir: string, o: LocalRingOptions): Partial<ImageSettings> {
  if (!o.recovery || o.seal === false) return {};
  const file = join(dir, recoveryKeyFile);
  const principal = existsSync(file) ? loadIdentity(file).principal : saveIdentity(file, generateIdentity('ed25519'));
  return { recoveryMembers: [principal.text], recoveryThreshold: 1 };
}

/**
 * After any relaunch, for a while: once no node is open and some are in recovery mode, reopen them with the
 * local member key (the same last-seen check as at a start) and pin the new ring id in the cluster file.
 */
function watchRelaunches(
  dir: string, nodes: LocalNode[], cluster: ClusterFile, remember: boolean, progress: (l: string) => void, logger: Logger,
): NodeJS.Timeout {
  let restarts = nodes.reduce((a, n) => a + n.restarts, 0);
  let checkUntil = 0;
  let busy = false;
  const timer = setInterval(() => {
    const now = nodes.reduce((a, n) => a + n.restarts, 0);
    if (now !== restarts) {
      restarts = now;
      checkUntil = Date.now() + 30_000;
    }
    if (busy || Date.now() > checkUntil) return;
    busy = true;
    void (async () => {
      const statuses = await recoveryStatuses(cluster, cluster.trust, 3000);
      if (statuses.some((st) => st.mode === 'open') || !statuses.some((st) => st.mode === 'recovery')) return;
      if (statuses.some((st) => st.mode === 'unreachable')) return; // not all back yet
      const r = await reopenLocal(dir, cluster, true, progress);
      if (!r.reopened) return;
      checkUntil = 0;
      cluster.trust.ringId = (await learnRingId(cluster, { unpinned: true })) ?? cluster.trust.ringId;
      writeJsonAtomic(join(dir, 'cluster.json'), cluster);
      if (remember) rememberTrust(cluster.trust, `ekv up ${join(dir, 'cluster.json')}`);
    })()
      .catch((err: unknown) => {
        checkUntil = 0;
        logger.error({ err: (err as Error).message }, 'reopening the relaunched ring failed');
        progress(`not reopened: ${(err as Error).message}`);
      })
      .finally(() => (busy = false));
  }, 1000);
  timer.unref();
  return timer;
}

async function keepSeen(cluster: ClusterFile, clusterFile: string): Promise<void> {
  // Bounded: a stop never waits more than a few seconds for it.
  const statuses = await Promise.race([recoveryStatuses(cluster, cluster.trust, 3000), new Promise<null>((r) => setTimeout(() => r(null), 6000).unref())]);
  if (statuses) writeSeen(defaultSeenFile(clusterFile), statuses);
}

/**
 * After a restart: wait until every node says whether it is in recovery mode; if some are and `autoOpen`,
 * sign their open with the local member key, after the same check a member makes by hand.
 */
async function reopenLocal(dir: string, cluster: ClusterFile, autoOpen: boolean, progress: (l: string) => void): Promise<LocalRing['recovery']> {
  const clusterFile = join(dir, 'cluster.json');
  let statuses = await recoveryStatuses(cluster, cluster.trust, 5000);
  for (let i = 0; i < 40 && statuses.some((s) => s.mode === 'unreachable'); i++) {
    await new Promise((r) => setTimeout(r, 250));
    statuses = await recoveryStatuses(cluster, cluster.trust, 5000);
  }
  const recovering = statuses.filter((s) => s.mode === 'recovery');
  const generation = Math.max(0, ...statuses.map((s) => s.gen ?? 0));
  if (recovering.length === 0) return { reopened: false, waiting: false, generation };
  progress(`${recovering.length} node(s) came up in recovery mode (ring generation ${recovering[0]?.gen}): nothing alive vouches for their sealed state`);
  if (!autoOpen) return { reopened: false, waiting: true, generation };
  const cmp = compareSeen(readSeen(defaultSeenFile(clusterFile)), statuses);
  for (const l of cmp.lines) progress(l);
  if (cmp.older) {
    throw new Error(`not reopening: a node recovered state older than this ring last had (a rollback?); see \`ekv recovery status -c ${clusterFile}\`, start with --no-auto-open and open it by hand (ekv recovery open --identity ${join(dir, recoveryKeyFile)} --force) if you mean to`);
  }
  const r = await signOpens(statuses, loadIdentity(join(dir, recoveryKeyFile)), cluster.trust);
  const failed = r.outcomes.find((x) => x.error || !x.opened);
  if (failed) throw new Error(`reopening failed at ${failed.addr}: ${failed.error ?? 'not open'}`);
  progress(`reopened the ring as generation ${r.generation} (ring ${r.newRing.slice(0, 16)}), signed by your recovery key ${join(dir, recoveryKeyFile)}`);
  return { reopened: true, waiting: false, generation: r.generation };
}

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
  /**
   * A new ring gets one recovery member, DIR/recovery.key, made for the local user (docs/recovery.md); `ekv up`
   * sets it. Default false (a ring whose image names no recovery members).
   */
  recovery?: boolean;
  /**
   * When the restarted ring comes up in recovery mode, sign its open with DIR/recovery.key after checking it
   * against DIR/cluster.json.seen (default true). False: leave it in recovery mode (and do not wait for it).
   */
  autoOpen?: boolean;
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
  /** What the start did about recovery mode: reopened (by DIR/recovery.key), left waiting, or nothing. */
  recovery: { reopened: boolean; waiting: boolean; generation: number };
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
    : previous?.image ?? { ...localImageSettings({ seal: o.seal ?? true, access: o.access ?? 'open', replicas, nodes: count }), ...localRecoveryMember(dir, o), ...o.imageSettings };
  const imagePath = explicitImage ?? (await localImage(settings as ImageSettings));
  const ca = await EmulatorCa.loadOrCreate(join(dir, 'ca'));
  const sealed = settings ? settings.kmsKeyArn !== '' : o.seal !== false;
  const kms = sealed ? await startLocalKms({ dir, ca, imagePath, logger: o.logger, ...(o.imds ? { imds: o.imds } : {}), ...(o.kmsAdmitImages ? { admitImages: o.kmsAdmitImages } : {}) }) : null;
  const kmsInfo = kms?.info ?? null;
  if (kmsInfo) writeJsonAtomic(join(dir, 'kms.json'), kmsInfo);
  /** The nodes started so far, in start order; `slots` by index. */
  const nodes: LocalNode[] = [];
  const slots: Array<LocalNode | undefined> = new Array<LocalNode | undefined>(count).fill(undefined);
  let clusterNow: ClusterFile | null = null;
  let watcher: NodeJS.Timeout | null = null;
  const stopAll = async () => {
    if (watcher) clearInterval(watcher);
    // RECOVERY HOOK: the local member's last-seen record, so a restart from older copies is not reopened.
    if (clusterNow && hasRecovery(settings)) await keepSeen(clusterNow, join(dir, 'cluster.json')).catch(() => undefined);
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
  let recovery = { reopened: false, waiting: false, generation: 0 };
  try {
    // The ring id is pinned when the ring is founded and kept across restarts: a node that comes back in
    // another ring (its host wiped it and it founded anew) is then refused by clients (WRONG_RING).
    let ringId = (previous && existsSync(clusterFile) ? loadCluster(clusterFile).trust.ringId : undefined) ?? (kms ? await learnRingId(cluster) : undefined);
    if (ringId) cluster.trust.ringId = ringId;
    // RECOVERY HOOK (docs/recovery.md): a restarted ring whose image names recovery members comes up in
    // recovery mode; the local member (DIR/recovery.key) signs its open unless it is older than last seen.
    if (previous && hasRecovery(settings)) {
      recovery = await reopenLocal(dir, cluster, o.autoOpen !== false, progress);
      if (recovery.reopened) ringId = await learnRingId(cluster, { unpinned: true });
      if (ringId) cluster.trust.ringId = ringId;
    }
  } catch (err) {
    await stopAll();
    throw err;
  }
  clusterNow = cluster;
  writeJsonAtomic(clusterFile, cluster);
  // This process created (or loaded) the emulated CA and measured the image itself, so the trust
  // section it just wrote is the user's own: record it, and `ekv get -c DIR/cluster.json` needs no flag.
  // A cluster file from anyone else is not in the store and is used for its addresses only.
  if (o.rememberTrust !== false) rememberTrust(cluster.trust, `ekv up ${clusterFile}`);
  try {
    if (!recovery.waiting && o.formTimeoutMs !== 0) await waitForRing(cluster, o.formTimeoutMs ?? 60_000, progress);
    if (recovery.reopened) await keepSeen(cluster, clusterFile); // the record now names the reopened generation
  } catch (err) {
    await stopAll();
    throw err;
  }
  // RECOVERY HOOK: enclaves that die are launched again (LocalNode); if they all came back in recovery mode
  // (the whole ring crashed, or a one-node ring's enclave), the local member reopens it, as at a start.
  if (hasRecovery(settings) && o.autoOpen !== false && o.recovery !== false) {
    watcher = watchRelaunches(dir, nodes, cluster, o.rememberTrust !== false, progress, o.logger);
  }
  return { dir, nodes, ca, clusterFile, cluster, imagePath, settings, kms, recovery, stop: stopAll };
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
async function learnRingId(cluster: ClusterFile, o: { unpinned?: boolean } = {}): Promise<string | undefined> {
  // This process wrote the trust section itself (its CA, its image's measurement): it may trust the file.
  const { ringId: _pinned, ...unpinnedTrust } = cluster.trust;
  const file = { ...cluster, nodes: cluster.nodes.slice(0, 1), ...(o.unpinned ? { trust: unpinnedTrust } : {}) };
  const kv = await connect({ cluster: file, trustClusterFile: true, timeoutMs: 10_000, floor: false });
  try {
    const conn = kv.node(cluster.nodes[0]!.addr);
    await conn.ensure();
    return conn.ringId?.toString('hex');
  } finally {
    await kv.close();
  }
}
